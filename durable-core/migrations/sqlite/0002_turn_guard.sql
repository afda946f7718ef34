-- One row that a transaction inserts again, failing with a uniqueness
-- violation, when a write it depends on did not happen (a turn whose
-- instance changed since the turn read it). This lets a transaction check
-- and write in one multi-statement query; on the violation the store
-- rolls back and checks row by row.
CREATE TABLE turn_guard (id INTEGER NOT NULL PRIMARY KEY);
INSERT INTO turn_guard (id) VALUES (1);
