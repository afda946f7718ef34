-- History and stream rows hold kilobytes of JSON. In a WITHOUT ROWID table
-- a row over about a quarter of a page spills into overflow pages, and rows
-- land on pages in instance-id order, so every turn rewrote several random
-- pages. As rowid tables their rows append to the last page, and small
-- unique indexes keep the keys (and the exactly-once guarantee of the
-- stream: one row per instance and sequence number, and per execution and
-- emit index).
CREATE TABLE history_rows (
    instance_id TEXT    NOT NULL,
    idx         INTEGER NOT NULL,
    event       TEXT    NOT NULL
);
INSERT INTO history_rows (instance_id, idx, event)
    SELECT instance_id, idx, event FROM history ORDER BY instance_id, idx;
DROP TABLE history;
ALTER TABLE history_rows RENAME TO history;
CREATE UNIQUE INDEX history_key ON history (instance_id, idx);

CREATE TABLE stream_rows (
    instance_id  TEXT    NOT NULL,
    seq          INTEGER NOT NULL,
    execution_id TEXT    NOT NULL,
    emit_index   INTEGER NOT NULL,
    name         TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    emitted_at   INTEGER NOT NULL
);
INSERT INTO stream_rows (instance_id, seq, execution_id, emit_index, name, payload, emitted_at)
    SELECT instance_id, seq, execution_id, emit_index, name, payload, emitted_at
    FROM stream_events ORDER BY instance_id, seq;
DROP TABLE stream_events;
ALTER TABLE stream_rows RENAME TO stream_events;
CREATE UNIQUE INDEX stream_events_seq ON stream_events (instance_id, seq);
CREATE UNIQUE INDEX stream_events_emit ON stream_events (instance_id, execution_id, emit_index);
