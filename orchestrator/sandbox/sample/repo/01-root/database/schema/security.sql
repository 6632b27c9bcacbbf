-- Permissions: run after the baseline and after every patch; safe to re-run.
--
-- The roles app and fragile must exist (the environment creates them with
-- their passwords). app reads and writes the application tables; fragile,
-- the long-running scripts' user, only reads. Neither may rewrite the record
-- of applied patches.

GRANT USAGE ON SCHEMA public TO app, fragile;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO app;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO fragile;
REVOKE INSERT, UPDATE, DELETE ON LaunchpadDatabaseRevision FROM app;
