-- One row that a commit inserts again, failing with a uniqueness
-- violation, when a turn's instance changed since the turn read it. This
-- lets a batch check and write in one statement (data-modifying WITH
-- queries); on the violation nothing is written and the store commits the
-- batch the long way, reading the rows first.
CREATE TABLE turn_guard (id INTEGER NOT NULL PRIMARY KEY);
INSERT INTO turn_guard (id) VALUES (1);
