-- The price of each item.
-- Cold: ADD COLUMN with NOT NULL takes an ACCESS EXCLUSIVE lock on item.
-- This patch does not record itself: the deploy tooling inserts its
-- LaunchpadDatabaseRevision row.

ALTER TABLE item ADD COLUMN price numeric(10, 2) DEFAULT 0 NOT NULL;
