-- fastdowntime: live
-- Index item names for ordering and searching. Built concurrently, so it
-- runs online while the application serves requests.

CREATE INDEX CONCURRENTLY item_name_idx ON item (name);

INSERT INTO LaunchpadDatabaseRevision VALUES (2200, 02, 0);
