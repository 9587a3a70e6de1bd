-- The PostgreSQL schema of smithers-rs: the same tables as the SQLite migrations 0001-0006, with
-- native types (BIGINT, BOOLEAN, JSONB). Never edit a released migration: add a new file.
-- Timestamps are RFC 3339 UTC text, as the engine writes them on every backend. Tables that are
-- read back in insertion order carry an identity column (`seq`), SQLite's rowid here.
CREATE TABLE _smithers_runs (
    run_id            TEXT PRIMARY KEY,
    workflow          TEXT NOT NULL,
    status            TEXT NOT NULL,
    input_json        JSONB NOT NULL,
    error             TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    finished_at       TEXT,
    lease_owner       TEXT,
    lease_expires_ms  BIGINT,
    cancel_requested  BOOLEAN NOT NULL DEFAULT FALSE,
    seq               BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX _smithers_runs_created ON _smithers_runs (created_at DESC, seq DESC);

CREATE TABLE _smithers_nodes (
    run_id        TEXT NOT NULL,
    node_id       TEXT NOT NULL,
    iteration     BIGINT NOT NULL,
    status        TEXT NOT NULL,
    attempts      BIGINT NOT NULL DEFAULT 0,
    output_table  TEXT,
    loop_id       TEXT,
    last_error    TEXT,
    updated_at    TEXT NOT NULL,
    seq           BIGINT GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (run_id, node_id, iteration)
);

CREATE TABLE _smithers_attempts (
    run_id              TEXT NOT NULL,
    node_id             TEXT NOT NULL,
    iteration           BIGINT NOT NULL,
    attempt             BIGINT NOT NULL,
    status              TEXT NOT NULL,
    owner               TEXT,
    agent               TEXT,
    started_at          TEXT NOT NULL,
    finished_at         TEXT,
    duration_ms         BIGINT,
    error               TEXT,
    input_tokens        BIGINT,
    output_tokens       BIGINT,
    cache_read_tokens   BIGINT,
    cache_write_tokens  BIGINT,
    cost_usd            DOUBLE PRECISION,
    session_id          TEXT,
    exit_code           BIGINT,
    model               TEXT,
    vcs_repo            TEXT,
    vcs_before          TEXT,
    vcs_after           TEXT,
    seq                 BIGINT GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (run_id, node_id, iteration, attempt)
);

-- Large texts stay out of the hot rows.
CREATE TABLE _smithers_transcripts (
    run_id      TEXT NOT NULL,
    node_id     TEXT NOT NULL,
    iteration   BIGINT NOT NULL,
    attempt     BIGINT NOT NULL,
    transcript  TEXT NOT NULL,
    PRIMARY KEY (run_id, node_id, iteration, attempt)
);

CREATE TABLE _smithers_frames (
    run_id      TEXT NOT NULL,
    frame_no    BIGINT NOT NULL,
    tree_hash   TEXT NOT NULL,
    tree        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (run_id, frame_no)
);

CREATE TABLE _smithers_events (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id     TEXT NOT NULL,
    at         TEXT NOT NULL,
    kind       TEXT NOT NULL,
    node_id    TEXT,
    iteration  BIGINT,
    payload    JSONB NOT NULL
);
CREATE INDEX _smithers_events_run ON _smithers_events (run_id, seq);

CREATE TABLE _smithers_ralph (
    run_id            TEXT NOT NULL,
    loop_id           TEXT NOT NULL,
    iteration         BIGINT NOT NULL,
    pass_start        BIGINT NOT NULL,
    parent_iteration  BIGINT NOT NULL,
    done              BOOLEAN NOT NULL,
    PRIMARY KEY (run_id, loop_id)
);

CREATE TABLE _smithers_output_tables (
    table_name    TEXT PRIMARY KEY,
    type_name     TEXT NOT NULL,
    columns_json  JSONB NOT NULL,
    signature     TEXT NOT NULL,
    created_at    TEXT NOT NULL
);

CREATE TABLE state (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE _smithers_approvals (
    run_id        TEXT NOT NULL,
    node_id       TEXT NOT NULL,
    iteration     BIGINT NOT NULL,
    status        TEXT NOT NULL,
    requested_at  TEXT NOT NULL,
    decided_at    TEXT,
    note          TEXT,
    seq           BIGINT GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (run_id, node_id, iteration)
);

CREATE TABLE _smithers_cache (
    cache_key     TEXT PRIMARY KEY,
    workflow      TEXT NOT NULL,
    node_id       TEXT NOT NULL,
    output_table  TEXT NOT NULL,
    output_json   JSONB NOT NULL,
    run_id        TEXT NOT NULL,
    created_at    TEXT NOT NULL
);

CREATE TABLE _smithers_steps (
    run_id        TEXT NOT NULL,
    step_id       BIGINT NOT NULL,
    kind          TEXT NOT NULL,
    name          TEXT NOT NULL,
    phase         TEXT,
    iteration     BIGINT NOT NULL,
    status        TEXT NOT NULL,
    task_ids      JSONB NOT NULL,
    started_at    TEXT NOT NULL,
    completed_at  TEXT,
    duration_ms   BIGINT,
    PRIMARY KEY (run_id, step_id),
    UNIQUE (run_id, kind, name, iteration)
);
