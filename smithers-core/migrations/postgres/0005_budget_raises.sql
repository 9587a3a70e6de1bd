-- The twin of SQLite's 0010: allowances added to a run's budget (node_id NULL) or a task's by
-- `smithers budget RUN --add ..`.
CREATE TABLE _smithers_budget_raises (
    run_id      TEXT NOT NULL,
    node_id     TEXT,
    add_usd     DOUBLE PRECISION NOT NULL DEFAULT 0,
    add_tokens  BIGINT NOT NULL DEFAULT 0,
    raised_at   TEXT NOT NULL,
    seq         BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX _smithers_budget_raises_run ON _smithers_budget_raises (run_id, seq);
