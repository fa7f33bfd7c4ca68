-- History by user alone (the console's search, `kickq history --user U` without --room): newest first from an
-- index, as the room and room+user searches are. A search by job id alone uses user_outcomes_job_id.
CREATE INDEX user_outcomes_user_at ON user_outcomes (user_id, at DESC, id DESC);
