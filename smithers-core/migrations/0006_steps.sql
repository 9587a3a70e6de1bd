-- Phases and steps as they run: sequential ids per run, status, timings, the tasks inside.
CREATE TABLE _smithers_steps (
    run_id        TEXT NOT NULL,
    step_id       INTEGER NOT NULL,
    kind          TEXT NOT NULL,
    name          TEXT NOT NULL,
    phase         TEXT,
    iteration     INTEGER NOT NULL,
    status        TEXT NOT NULL,
    task_ids      TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    completed_at  TEXT,
    duration_ms   INTEGER,
    PRIMARY KEY (run_id, step_id),
    UNIQUE (run_id, kind, name, iteration)
);
