-- Pool mode (no SQLite twin: the attempt queue needs PostgreSQL): a driver queues an attempt for
-- the workers of its workflow instead of running it itself; a worker claims it (FOR UPDATE SKIP
-- LOCKED), holds the claim by renewing it, and records the raw outcome, fenced by its claim
-- (owner + epoch, the epoch incremented at every claim); the driver consumes the outcome.
--   queue: NULL (run by its driver), 'queued', 'claimed', 'recorded'.
ALTER TABLE _smithers_attempts ADD COLUMN queue TEXT;
ALTER TABLE _smithers_attempts ADD COLUMN payload JSONB;
ALTER TABLE _smithers_attempts ADD COLUMN claim_owner TEXT;
ALTER TABLE _smithers_attempts ADD COLUMN claim_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE _smithers_attempts ADD COLUMN claim_expires_ms BIGINT;
ALTER TABLE _smithers_attempts ADD COLUMN stop_requested BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE _smithers_attempts ADD COLUMN outcome JSONB;
-- What workers scan: attempts waiting for a worker or held by one, oldest first.
CREATE INDEX _smithers_attempts_claimable ON _smithers_attempts (seq)
    WHERE queue IN ('queued', 'claimed') AND status = 'in-progress';
