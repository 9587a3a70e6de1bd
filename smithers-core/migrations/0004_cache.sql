-- Outputs reusable across runs by `<Workflow cache>`: keyed by a hash of the workflow name, node
-- id, rendered prompt, output schema signature and agent signature.
CREATE TABLE _smithers_cache (
    cache_key     TEXT PRIMARY KEY,
    workflow      TEXT NOT NULL,
    node_id       TEXT NOT NULL,
    output_table  TEXT NOT NULL,
    output_json   TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
