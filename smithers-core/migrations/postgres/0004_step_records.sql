-- The twin of SQLite's 0009: steps get their own sequential ids per run (phases move to
-- `_smithers_phases`), a parent step, an active flag, snapshots, the commit an agent made, agent
-- config, token usage and exit code; loop counter history, rolled-back outputs, attempts undone
-- by a rollback, and the parent of a forked run.
CREATE TABLE _smithers_phases (
    run_id        TEXT NOT NULL,
    phase_id      BIGINT NOT NULL,
    name          TEXT NOT NULL,
    iteration     BIGINT NOT NULL,
    status        TEXT NOT NULL,
    active        BOOLEAN NOT NULL DEFAULT TRUE,
    started_at    TEXT,
    completed_at  TEXT,
    duration_ms   BIGINT,
    created_at    TEXT NOT NULL,
    created_seq   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, phase_id)
);
CREATE UNIQUE INDEX _smithers_phases_active ON _smithers_phases (run_id, name, iteration) WHERE active;

DROP TABLE _smithers_steps;
CREATE TABLE _smithers_steps (
    run_id            TEXT NOT NULL,
    step_id           BIGINT NOT NULL,
    parent_step_id    BIGINT,
    active            BOOLEAN NOT NULL DEFAULT TRUE,
    source            TEXT NOT NULL DEFAULT 'tree',
    name              TEXT NOT NULL,
    phase_id          BIGINT,
    phase             TEXT,
    iteration         BIGINT NOT NULL,
    status            TEXT NOT NULL,
    task_ids          JSONB NOT NULL,
    started_at        TEXT,
    completed_at      TEXT,
    duration_ms       BIGINT,
    created_at        TEXT NOT NULL,
    created_seq       BIGINT NOT NULL DEFAULT 0,
    started_seq       BIGINT,
    vcs_repo          TEXT,
    vcs_backend       TEXT,
    snapshot_before   TEXT,
    snapshot_after    TEXT,
    head_before       TEXT,
    commit_created    TEXT,
    agent_config_json JSONB,
    token_usage_json  JSONB,
    exit_code         BIGINT,
    PRIMARY KEY (run_id, step_id)
);
CREATE UNIQUE INDEX _smithers_steps_active ON _smithers_steps (run_id, name, iteration)
  WHERE active AND source = 'tree';

CREATE TABLE _smithers_ralph_history (
    run_id           TEXT NOT NULL,
    loop_id          TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    iteration        BIGINT NOT NULL,
    pass_start       BIGINT NOT NULL,
    parent_iteration BIGINT NOT NULL,
    done             BOOLEAN NOT NULL
);
CREATE INDEX _smithers_ralph_history_run ON _smithers_ralph_history (run_id, loop_id, seq);

CREATE TABLE _smithers_rolled_back_outputs (
    run_id         TEXT NOT NULL,
    node_id        TEXT NOT NULL,
    iteration      BIGINT NOT NULL,
    output_table   TEXT NOT NULL,
    output_json    JSONB NOT NULL,
    rolled_back_at TEXT NOT NULL
);

ALTER TABLE _smithers_attempts ADD COLUMN rolled_back BOOLEAN NOT NULL DEFAULT FALSE;

ALTER TABLE _smithers_runs ADD COLUMN parent_run_id TEXT;
ALTER TABLE _smithers_runs ADD COLUMN parent_frame BIGINT;
