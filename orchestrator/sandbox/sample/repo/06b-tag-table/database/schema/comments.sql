-- Comments on the schema, applied to a fresh database after every patch.

COMMENT ON TABLE LaunchpadDatabaseRevision IS 'One row per applied schema patch (major, minor, patch).';
COMMENT ON TABLE person IS 'Someone who owns items.';
COMMENT ON COLUMN person.name IS 'Unique short name, used in URLs.';
COMMENT ON COLUMN person.displayname IS 'Name shown on pages.';
COMMENT ON TABLE item IS 'Things listed on the front page.';
COMMENT ON COLUMN item.owner IS 'The person who added the item, if known.';
COMMENT ON COLUMN item.created IS 'When the item was added.';
COMMENT ON COLUMN item.note IS 'Free-text note shown with the item.';
COMMENT ON TABLE tag IS 'A label that groups items.';
COMMENT ON COLUMN item.tag_id IS 'The tag of the item, if any.';
