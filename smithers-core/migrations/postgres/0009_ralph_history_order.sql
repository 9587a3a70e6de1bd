-- Loop counter history in write order: several rows of one loop can share an event sequence number
-- (a batch that moves a loop twice between two events), and a rollback puts back the last one
-- written at the cut. SQLite orders them by rowid; PostgreSQL has none, so an identity column.
ALTER TABLE _smithers_ralph_history ADD COLUMN pos BIGINT GENERATED ALWAYS AS IDENTITY;
