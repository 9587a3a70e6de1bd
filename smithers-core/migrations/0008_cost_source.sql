-- Where an attempt's cost_usd comes from: 'reported' by the agent (Claude Code's total_cost_usd)
-- or 'estimated' from its tokens and the price catalog; NULL with a NULL cost when the model has
-- no price (shown as "no price", never as zero).
ALTER TABLE _smithers_attempts ADD COLUMN cost_source TEXT;
