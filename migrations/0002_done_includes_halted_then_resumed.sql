-- A user kicked after a halt (`halted_then_resumed`) is done for its job id,
-- so the redelivery lookup counts it, and its partial index must cover it:
-- the predicate is spelled exactly as the lookup spells it.
DROP INDEX IF EXISTS user_outcomes_done;
CREATE INDEX user_outcomes_done ON user_outcomes (job_id, room_id, user_id)
    WHERE outcome IN ('kicked', 'halted_then_resumed', 'nothing_to_do');
