-- Events keep their `seq` as a plain INTEGER PRIMARY KEY (the rowid) instead of AUTOINCREMENT:
-- AUTOINCREMENT rewrites the `sqlite_sequence` row, one more page in every commit that records
-- an event, which is every output commit (issue 10). Without it a new event gets the largest
-- seq so far plus one, so seqs still only grow as long as no committed event with the largest
-- seq is ever deleted; the only deletion of events (a fork trimming what it copied past its
-- frame) removes rows inserted in the same transaction, never seen by anyone.
CREATE TABLE _smithers_events_0013 (
    seq        INTEGER PRIMARY KEY,
    run_id     TEXT NOT NULL,
    at         TEXT NOT NULL,
    kind       TEXT NOT NULL,
    node_id    TEXT,
    iteration  INTEGER,
    payload    TEXT NOT NULL
);
INSERT INTO _smithers_events_0013 (seq, run_id, at, kind, node_id, iteration, payload)
    SELECT seq, run_id, at, kind, node_id, iteration, payload FROM _smithers_events;
DROP TABLE _smithers_events;
ALTER TABLE _smithers_events_0013 RENAME TO _smithers_events;
CREATE INDEX _smithers_events_run ON _smithers_events (run_id, seq);
