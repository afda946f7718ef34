-- Instances: one row per orchestration instance (its current execution).
CREATE TABLE instances (
    instance_id     TEXT    NOT NULL PRIMARY KEY,
    name            TEXT    NOT NULL,
    execution_id    TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    version         INTEGER NOT NULL DEFAULT 0,
    input           TEXT    NOT NULL,
    output          TEXT,
    custom_status   TEXT,
    failure         TEXT,
    parent          TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    completed_at    INTEGER,
    history_len     INTEGER NOT NULL DEFAULT 0,
    stream_seq      INTEGER NOT NULL DEFAULT 0,
    execution_emits INTEGER NOT NULL DEFAULT 0,
    lock_owner      TEXT,
    lock_expires    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX instances_created ON instances (created_at, instance_id);
CREATE INDEX instances_lock ON instances (lock_expires);
CREATE INDEX instances_owner ON instances (lock_owner);

-- History of the current execution of each instance, in order.
CREATE TABLE history (
    instance_id TEXT    NOT NULL,
    idx         INTEGER NOT NULL,
    event       TEXT    NOT NULL,
    PRIMARY KEY (instance_id, idx)
) WITHOUT ROWID;

-- The orchestration inbox: activity results, timers, raised events, control
-- operations. A message is invisible until visible_at (timers, delayed
-- starts).
CREATE TABLE messages (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id  TEXT    NOT NULL,
    execution_id TEXT,
    kind         TEXT    NOT NULL,
    event        TEXT    NOT NULL,
    visible_at   INTEGER NOT NULL
);
CREATE INDEX messages_visible ON messages (visible_at);
CREATE INDEX messages_instance ON messages (instance_id, id);

-- Activity work items, claimed with leases. A worker that scheduled an
-- activity usually claims it in the same transaction and runs it itself.
CREATE TABLE activities (
    instance_id   TEXT    NOT NULL,
    execution_id  TEXT    NOT NULL,
    task_id       INTEGER NOT NULL,
    name          TEXT    NOT NULL,
    input         TEXT    NOT NULL,
    lock_owner    TEXT,
    lock_expires  INTEGER NOT NULL DEFAULT 0,
    attempt       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (instance_id, execution_id, task_id)
);
CREATE INDEX activities_lock ON activities (lock_expires);
CREATE INDEX activities_owner ON activities (lock_owner);

-- The append-only event stream of each instance. The primary key makes
-- sequence numbers unique; the second key makes an emit impossible to store
-- twice, even if replay logic had a bug.
CREATE TABLE stream_events (
    instance_id  TEXT    NOT NULL,
    seq          INTEGER NOT NULL,
    execution_id TEXT    NOT NULL,
    emit_index   INTEGER NOT NULL,
    name         TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    emitted_at   INTEGER NOT NULL,
    PRIMARY KEY (instance_id, seq),
    UNIQUE (instance_id, execution_id, emit_index)
) WITHOUT ROWID;
