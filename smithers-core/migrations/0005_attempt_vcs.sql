-- Working-copy snapshots around agent attempts (git commits under refs/smithers/...).
ALTER TABLE _smithers_attempts ADD COLUMN vcs_repo TEXT;
ALTER TABLE _smithers_attempts ADD COLUMN vcs_before TEXT;
ALTER TABLE _smithers_attempts ADD COLUMN vcs_after TEXT;
