-- Workers and supervision (issue 11): the registry of live `worker` processes, and the restart
-- bookkeeping of runs a worker took over from a driver that was gone, kept in the database so a
-- worker that restarts itself still knows how often a run crashed.
CREATE TABLE _smithers_workers (
    worker_id    TEXT PRIMARY KEY,          -- host:pid:nonce, as lease owners
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    workflow     TEXT,                      -- the workflow whose runs it drives, once known
    concurrency  INTEGER NOT NULL,
    driving_json TEXT NOT NULL DEFAULT '[]', -- run ids it drives now
    started_at   TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    expires_ms   INTEGER NOT NULL           -- stale after this (epoch ms) without a heartbeat
);

CREATE TABLE _smithers_restarts (
    run_id          TEXT PRIMARY KEY,
    restarts        INTEGER NOT NULL,       -- takeovers since the run last made progress
    progress        INTEGER NOT NULL,       -- finished nodes at the last takeover
    last_restart_at TEXT NOT NULL,
    last_restart_ms INTEGER NOT NULL,
    last_reason     TEXT NOT NULL,          -- why the last driver was judged gone
    last_worker     TEXT NOT NULL
);
