-- Instances: one row per orchestration instance (its current execution).
-- Times are Unix milliseconds; JSON values are stored as text.
CREATE TABLE instances (
    instance_id     TEXT    NOT NULL PRIMARY KEY,
    name            TEXT    NOT NULL,
    execution_id    TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    version         BIGINT  NOT NULL DEFAULT 0,
    input           TEXT    NOT NULL,
    output          TEXT,
    custom_status   TEXT,
    failure         TEXT,
    parent          TEXT,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    completed_at    BIGINT,
    history_len     BIGINT  NOT NULL DEFAULT 0,
    stream_seq      BIGINT  NOT NULL DEFAULT 0,
    execution_emits BIGINT  NOT NULL DEFAULT 0,
    lock_owner      TEXT,
    lock_expires    BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX instances_created ON instances (created_at, instance_id);
CREATE INDEX instances_owner ON instances (lock_owner);

-- History of the current execution of each instance, in order.
CREATE TABLE history (
    instance_id TEXT   NOT NULL,
    idx         BIGINT NOT NULL,
    event       TEXT   NOT NULL,
    PRIMARY KEY (instance_id, idx)
);

-- The orchestration inbox: activity results, timers, raised events, control
-- operations. A message is invisible until visible_at.
CREATE TABLE messages (
    id           BIGSERIAL PRIMARY KEY,
    instance_id  TEXT   NOT NULL,
    execution_id TEXT,
    kind         TEXT   NOT NULL,
    event        TEXT   NOT NULL,
    visible_at   BIGINT NOT NULL
);
CREATE INDEX messages_visible ON messages (visible_at);
CREATE INDEX messages_instance ON messages (instance_id, visible_at, id);

-- Activity work items, claimed with leases.
CREATE TABLE activities (
    instance_id   TEXT   NOT NULL,
    execution_id  TEXT   NOT NULL,
    task_id       BIGINT NOT NULL,
    name          TEXT   NOT NULL,
    input         TEXT   NOT NULL,
    lock_owner    TEXT,
    lock_expires  BIGINT NOT NULL DEFAULT 0,
    attempt       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (instance_id, execution_id, task_id)
);
CREATE INDEX activities_lock ON activities (lock_expires);
CREATE INDEX activities_owner ON activities (lock_owner);

-- The append-only event stream of each instance. The primary key makes
-- sequence numbers unique; the second key makes an emit impossible to store
-- twice, even if replay logic had a bug.
CREATE TABLE stream_events (
    instance_id  TEXT   NOT NULL,
    seq          BIGINT NOT NULL,
    execution_id TEXT   NOT NULL,
    emit_index   BIGINT NOT NULL,
    name         TEXT   NOT NULL,
    payload      TEXT   NOT NULL,
    emitted_at   BIGINT NOT NULL,
    PRIMARY KEY (instance_id, seq),
    UNIQUE (instance_id, execution_id, emit_index)
);
