-- How many of each item are in stock; never negative.
-- Cold: ADD COLUMN with a CHECK constraint locks and scans item.

ALTER TABLE item ADD COLUMN stock integer DEFAULT 0 NOT NULL
    CONSTRAINT item_stock_nonnegative CHECK (stock >= 0);

UPDATE item SET stock = 3 WHERE tag_id IS NOT NULL;

INSERT INTO LaunchpadDatabaseRevision VALUES (2200, 05, 0);
