-- The seeds' step record (seeds 000, 001, 003): steps get their own sequential ids per run (phases
-- move to `_smithers_phases`), a parent step, an active flag (rolled-back steps stay for audit),
-- working-copy snapshots, the commit an agent made, agent config, token usage and exit code.
-- `started_seq` / `created_seq` are the event sequence numbers when the step started / was
-- created: where a rollback cuts the run's history.
CREATE TABLE _smithers_phases (
    run_id        TEXT NOT NULL,
    phase_id      INTEGER NOT NULL,
    name          TEXT NOT NULL,
    iteration     INTEGER NOT NULL,
    status        TEXT NOT NULL,
    active        INTEGER NOT NULL DEFAULT 1,
    started_at    TEXT,
    completed_at  TEXT,
    duration_ms   INTEGER,
    created_at    TEXT NOT NULL,
    created_seq   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, phase_id)
);
CREATE UNIQUE INDEX _smithers_phases_active ON _smithers_phases (run_id, name, iteration) WHERE active = 1;

INSERT INTO _smithers_phases (run_id, phase_id, name, iteration, status, started_at, completed_at, duration_ms, created_at)
SELECT run_id, ROW_NUMBER() OVER (PARTITION BY run_id ORDER BY step_id), name, iteration, status,
       started_at, completed_at, duration_ms, started_at
FROM _smithers_steps WHERE kind = 'phase';

CREATE TABLE _smithers_step_records (
    run_id            TEXT NOT NULL,
    step_id           INTEGER NOT NULL,
    parent_step_id    INTEGER,
    active            INTEGER NOT NULL DEFAULT 1,
    -- `tree` for a `<Step>` the engine tracks, `api` for one started through the Steps API.
    source            TEXT NOT NULL DEFAULT 'tree',
    name              TEXT NOT NULL,
    phase_id          INTEGER,
    phase             TEXT,
    iteration         INTEGER NOT NULL,
    status            TEXT NOT NULL,
    task_ids          TEXT NOT NULL,
    started_at        TEXT,
    completed_at      TEXT,
    duration_ms       INTEGER,
    created_at        TEXT NOT NULL,
    created_seq       INTEGER NOT NULL DEFAULT 0,
    started_seq       INTEGER,
    vcs_repo          TEXT,
    vcs_backend       TEXT,
    snapshot_before   TEXT,
    snapshot_after    TEXT,
    head_before       TEXT,
    commit_created    TEXT,
    agent_config_json TEXT,
    token_usage_json  TEXT,
    exit_code         INTEGER,
    PRIMARY KEY (run_id, step_id)
);

INSERT INTO _smithers_step_records
  (run_id, step_id, parent_step_id, name, phase, phase_id, iteration, status, task_ids, started_at,
   completed_at, duration_ms, created_at)
SELECT s.run_id, s.n, CASE WHEN s.n > 1 THEN s.n - 1 END, s.name, s.phase,
       (SELECT MAX(p.phase_id) FROM _smithers_phases p WHERE p.run_id = s.run_id AND p.name = s.phase),
       s.iteration, s.status, s.task_ids, s.started_at, s.completed_at, s.duration_ms, s.started_at
FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY run_id ORDER BY step_id) AS n
      FROM _smithers_steps WHERE kind = 'step') s;

DROP TABLE _smithers_steps;
ALTER TABLE _smithers_step_records RENAME TO _smithers_steps;
CREATE UNIQUE INDEX _smithers_steps_active ON _smithers_steps (run_id, name, iteration)
  WHERE active = 1 AND source = 'tree';

-- Loop counters as they moved, so a rollback can put them back where they were.
CREATE TABLE _smithers_ralph_history (
    run_id           TEXT NOT NULL,
    loop_id          TEXT NOT NULL,
    seq              INTEGER NOT NULL,
    iteration        INTEGER NOT NULL,
    pass_start       INTEGER NOT NULL,
    parent_iteration INTEGER NOT NULL,
    done             INTEGER NOT NULL
);
CREATE INDEX _smithers_ralph_history_run ON _smithers_ralph_history (run_id, loop_id, seq);

-- Outputs a rollback took back: kept for audit, no longer read by `Ctx`.
CREATE TABLE _smithers_rolled_back_outputs (
    run_id         TEXT NOT NULL,
    node_id        TEXT NOT NULL,
    iteration      INTEGER NOT NULL,
    output_table   TEXT NOT NULL,
    output_json    TEXT NOT NULL,
    rolled_back_at TEXT NOT NULL
);

-- Attempts undone by a rollback stay for audit but no longer count against `retries`.
ALTER TABLE _smithers_attempts ADD COLUMN rolled_back INTEGER NOT NULL DEFAULT 0;

-- A forked run remembers where it came from.
ALTER TABLE _smithers_runs ADD COLUMN parent_run_id TEXT;
ALTER TABLE _smithers_runs ADD COLUMN parent_frame INTEGER;
