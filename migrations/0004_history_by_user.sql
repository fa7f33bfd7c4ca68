-- no-transaction
-- History by user alone (the console's search, `kickq history --user U` without --room): newest first from an
-- index, as the room and room+user searches are. A search by job id alone uses user_outcomes_job_id.
-- CONCURRENTLY, so workers still running the previous version keep writing while a large ledger builds it (a
-- plain CREATE INDEX would block their inserts for the whole build); that needs a migration of one statement
-- outside a transaction.
CREATE INDEX CONCURRENTLY IF NOT EXISTS user_outcomes_user_at ON user_outcomes (user_id, at DESC, id DESC);
