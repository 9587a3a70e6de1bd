-- Core tables of smithers-rs. Never edit a released migration: add a new file.
CREATE TABLE _smithers_runs (
    run_id            TEXT PRIMARY KEY,
    workflow          TEXT NOT NULL,
    status            TEXT NOT NULL,
    input_json        TEXT NOT NULL,
    error             TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    finished_at       TEXT,
    lease_owner       TEXT,
    lease_expires_ms  INTEGER
);

CREATE TABLE _smithers_nodes (
    run_id        TEXT NOT NULL,
    node_id       TEXT NOT NULL,
    iteration     INTEGER NOT NULL,
    status        TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    output_table  TEXT,
    loop_id       TEXT,
    last_error    TEXT,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (run_id, node_id, iteration)
);

CREATE TABLE _smithers_attempts (
    run_id              TEXT NOT NULL,
    node_id             TEXT NOT NULL,
    iteration           INTEGER NOT NULL,
    attempt             INTEGER NOT NULL,
    status              TEXT NOT NULL,
    owner               TEXT,
    agent               TEXT,
    started_at          TEXT NOT NULL,
    finished_at         TEXT,
    duration_ms         INTEGER,
    error               TEXT,
    input_tokens        INTEGER,
    output_tokens       INTEGER,
    cache_read_tokens   INTEGER,
    cache_write_tokens  INTEGER,
    cost_usd            REAL,
    session_id          TEXT,
    exit_code           INTEGER,
    model               TEXT,
    PRIMARY KEY (run_id, node_id, iteration, attempt)
);

-- Large texts stay out of the hot rows.
CREATE TABLE _smithers_transcripts (
    run_id      TEXT NOT NULL,
    node_id     TEXT NOT NULL,
    iteration   INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    transcript  TEXT NOT NULL,
    PRIMARY KEY (run_id, node_id, iteration, attempt)
);

CREATE TABLE _smithers_frames (
    run_id      TEXT NOT NULL,
    frame_no    INTEGER NOT NULL,
    tree_hash   TEXT NOT NULL,
    tree        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (run_id, frame_no)
);

CREATE TABLE _smithers_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     TEXT NOT NULL,
    at         TEXT NOT NULL,
    kind       TEXT NOT NULL,
    node_id    TEXT,
    iteration  INTEGER,
    payload    TEXT NOT NULL
);
CREATE INDEX _smithers_events_run ON _smithers_events (run_id, seq);

CREATE TABLE _smithers_ralph (
    run_id            TEXT NOT NULL,
    loop_id           TEXT NOT NULL,
    iteration         INTEGER NOT NULL,
    pass_start        INTEGER NOT NULL,
    parent_iteration  INTEGER NOT NULL,
    done              INTEGER NOT NULL,
    PRIMARY KEY (run_id, loop_id)
);

CREATE TABLE _smithers_output_tables (
    table_name    TEXT PRIMARY KEY,
    type_name     TEXT NOT NULL,
    columns_json  TEXT NOT NULL,
    signature     TEXT NOT NULL,
    created_at    TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS state (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  TEXT DEFAULT (datetime('now'))
);
