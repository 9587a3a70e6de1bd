-- Nodes and attempts are stored in their primary key's b-tree alone (WITHOUT ROWID) instead of
-- a rowid table plus a separate index of that key: a commit that inserts a node and its attempt
-- (every start of an attempt, every static or cached output) writes two pages fewer (issue 10).
-- Without a rowid, the insertion order `ORDER BY rowid` gave is kept in `ord`: a new row's `ord`
-- is `smithers_ord()` (a function of the store's connection: microseconds since the epoch,
-- always more than the last it gave). The rows already here keep their rowid order below zero,
-- so they stay before every row inserted after this migration.
CREATE TABLE _smithers_nodes_0014 (
    run_id        TEXT NOT NULL,
    node_id       TEXT NOT NULL,
    iteration     INTEGER NOT NULL,
    status        TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    output_table  TEXT,
    loop_id       TEXT,
    last_error    TEXT,
    updated_at    TEXT NOT NULL,
    ord           INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, node_id, iteration)
) WITHOUT ROWID;
INSERT INTO _smithers_nodes_0014
    (run_id, node_id, iteration, status, attempts, output_table, loop_id, last_error, updated_at, ord)
    SELECT run_id, node_id, iteration, status, attempts, output_table, loop_id, last_error, updated_at,
           rowid - (SELECT COALESCE(MAX(rowid), 0) FROM _smithers_nodes) - 1
    FROM _smithers_nodes;
DROP TABLE _smithers_nodes;
ALTER TABLE _smithers_nodes_0014 RENAME TO _smithers_nodes;

CREATE TABLE _smithers_attempts_0014 (
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
    vcs_repo            TEXT,
    vcs_before          TEXT,
    vcs_after           TEXT,
    cost_source         TEXT,
    rolled_back         INTEGER NOT NULL DEFAULT 0,
    ord                 INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, node_id, iteration, attempt)
) WITHOUT ROWID;
INSERT INTO _smithers_attempts_0014
    (run_id, node_id, iteration, attempt, status, owner, agent, started_at, finished_at, duration_ms,
     error, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd, session_id,
     exit_code, model, vcs_repo, vcs_before, vcs_after, cost_source, rolled_back, ord)
    SELECT run_id, node_id, iteration, attempt, status, owner, agent, started_at, finished_at, duration_ms,
           error, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd, session_id,
           exit_code, model, vcs_repo, vcs_before, vcs_after, cost_source, rolled_back,
           rowid - (SELECT COALESCE(MAX(rowid), 0) FROM _smithers_attempts) - 1
    FROM _smithers_attempts;
DROP TABLE _smithers_attempts;
ALTER TABLE _smithers_attempts_0014 RENAME TO _smithers_attempts;
