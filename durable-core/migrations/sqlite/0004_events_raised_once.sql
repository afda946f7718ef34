-- External events raised "once" (Client::raise_event_once): one row per
-- instance execution and event name, so that a second raise of the name
-- is refused, atomically, even while the first still waits in the inbox.
-- The rows go with the instance (purge, or a new instance of the id).
CREATE TABLE events_raised_once (
    instance_id  TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    name         TEXT NOT NULL,
    PRIMARY KEY (instance_id, execution_id, name)
) WITHOUT ROWID;
