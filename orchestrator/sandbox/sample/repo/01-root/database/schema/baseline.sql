-- Baseline schema of the sample application: database revision 2200-00-0.
--
-- A fresh database is this file, then security.sql, then every
-- patch-2200-*.sql in numeric order (each followed by security.sql).

SET client_min_messages = warning;

CREATE TABLE LaunchpadDatabaseRevision (
    major integer NOT NULL,
    minor integer NOT NULL,
    patch integer NOT NULL,
    start_time timestamp without time zone DEFAULT (now() AT TIME ZONE 'UTC'),
    end_time timestamp without time zone,
    PRIMARY KEY (major, minor, patch)
);

CREATE TABLE person (
    id serial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    displayname text NOT NULL
);

CREATE TABLE item (
    id serial PRIMARY KEY,
    name text NOT NULL,
    owner integer REFERENCES person,
    created timestamp with time zone DEFAULT now() NOT NULL
);

INSERT INTO person (name, displayname) VALUES
    ('ada', 'Ada Lovelace'),
    ('grace', 'Grace Hopper'),
    ('edsger', 'Edsger Dijkstra'),
    ('barbara', 'Barbara Liskov');

INSERT INTO item (name, owner, created) VALUES
    ('Analytical engine manual', 1, '2024-01-02 09:15:00+00'),
    ('Punched card reader', 1, '2024-01-03 11:40:00+00'),
    ('Bernoulli number table', 1, '2024-01-05 14:05:00+00'),
    ('COBOL reference card', 2, '2024-01-08 10:30:00+00'),
    ('Nanosecond wire', 2, '2024-01-09 16:20:00+00'),
    ('Moth in a logbook', 2, '2024-01-11 08:55:00+00'),
    ('Compiler notebook', 2, '2024-01-12 13:10:00+00'),
    ('Shortest path sketch', 3, '2024-01-15 09:00:00+00'),
    ('Semaphore flags', 3, '2024-01-16 15:45:00+00'),
    ('Dining philosophers set', 3, '2024-01-18 12:25:00+00'),
    ('Fountain pen', 3, '2024-01-19 17:35:00+00'),
    ('Abstract data type primer', 4, '2024-01-22 10:05:00+00'),
    ('CLU language report', 4, '2024-01-23 11:50:00+00'),
    ('Substitution principle poster', 4, '2024-01-25 14:15:00+00'),
    ('Distributed systems lecture notes', 4, '2024-01-26 09:40:00+00'),
    ('Magnetic core plane', NULL, '2024-01-29 16:00:00+00'),
    ('Teletype paper roll', NULL, '2024-01-30 08:30:00+00'),
    ('Slide rule', 1, '2024-02-01 12:45:00+00'),
    ('Flowchart template', 2, '2024-02-02 10:10:00+00'),
    ('Vacuum tube', 3, '2024-02-05 15:55:00+00');

INSERT INTO LaunchpadDatabaseRevision VALUES (2200, 0, 0);
