-- Tags: each item may carry one tag.
-- Cold: the foreign key column and its index lock item.

CREATE TABLE tag (
    id serial PRIMARY KEY,
    name text NOT NULL UNIQUE
);

INSERT INTO tag (name) VALUES ('hardware'), ('paper'), ('software');

ALTER TABLE item ADD COLUMN tag_id integer REFERENCES tag;
CREATE INDEX item_tag_id_idx ON item (tag_id);

UPDATE item SET tag_id = (SELECT id FROM tag WHERE name = 'paper')
    WHERE name IN ('Analytical engine manual', 'COBOL reference card', 'Teletype paper roll');
UPDATE item SET tag_id = (SELECT id FROM tag WHERE name = 'hardware')
    WHERE name IN ('Punched card reader', 'Magnetic core plane', 'Vacuum tube');

INSERT INTO LaunchpadDatabaseRevision VALUES (2200, 03, 0);
