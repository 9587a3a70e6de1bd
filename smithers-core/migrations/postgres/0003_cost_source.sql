-- The twin of SQLite's 0008: where an attempt's cost_usd comes from: 'reported' by the agent or
-- 'estimated' from its tokens and the price catalog; NULL with a NULL cost when the model has no
-- price.
ALTER TABLE _smithers_attempts ADD COLUMN cost_source TEXT;
