-- A free-text note on each item, shown under its name.
-- Cold: ADD COLUMN takes an ACCESS EXCLUSIVE lock on item.

ALTER TABLE item ADD COLUMN note text;

INSERT INTO LaunchpadDatabaseRevision VALUES (2200, 01, 0);
