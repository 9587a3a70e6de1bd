-- Human approvals of `needs_approval` tasks: requested by the engine, decided by
-- `smithers approve|deny` from any process.
CREATE TABLE _smithers_approvals (
    run_id        TEXT NOT NULL,
    node_id       TEXT NOT NULL,
    iteration     INTEGER NOT NULL,
    status        TEXT NOT NULL,
    requested_at  TEXT NOT NULL,
    decided_at    TEXT,
    note          TEXT,
    PRIMARY KEY (run_id, node_id, iteration)
);
