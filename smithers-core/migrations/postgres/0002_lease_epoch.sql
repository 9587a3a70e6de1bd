-- Fencing (the twin of SQLite's 0007): the lease epoch, incremented at every acquisition of a
-- run's lease. A writer's token is (lease_owner, lease_epoch); every fenced write checks it in
-- its own transaction.
ALTER TABLE _smithers_runs ADD COLUMN lease_epoch BIGINT NOT NULL DEFAULT 0;
