-- Most instances hold no lease: a new instance, one that finished, one
-- that waits. Indexing only the leased ones keeps a new instance out of
-- both indexes, two pages fewer for each start to write to the log.
DROP INDEX instances_lock;
DROP INDEX instances_owner;
CREATE INDEX instances_lock ON instances (lock_expires) WHERE lock_expires > 0;
CREATE INDEX instances_owner ON instances (lock_owner) WHERE lock_owner IS NOT NULL;
