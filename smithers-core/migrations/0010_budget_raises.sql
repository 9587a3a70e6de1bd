-- Allowances added to a run's budget (node_id NULL) or a task's by `smithers budget RUN --add ..`;
-- the engine adds them to the limits declared in the workflow when it loads the run.
CREATE TABLE _smithers_budget_raises (
    run_id      TEXT NOT NULL,
    node_id     TEXT,
    add_usd     REAL NOT NULL DEFAULT 0,
    add_tokens  INTEGER NOT NULL DEFAULT 0,
    raised_at   TEXT NOT NULL
);
CREATE INDEX _smithers_budget_raises_run ON _smithers_budget_raises (run_id);
