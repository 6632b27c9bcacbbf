-- Index items by creation time, for the newest-first listings to come.
-- Built concurrently: safe online.

CREATE INDEX CONCURRENTLY item_created_idx ON item (created);
COMMENT ON INDEX item_created_idx IS 'Newest items first.';

INSERT INTO LaunchpadDatabaseRevision VALUES (2200, 06, 0);
