-- Budgets mid-attempt in pool mode: a worker executing an agent attempt records the usage the
-- agent reported so far on the attempt's row (fenced by its claim, waking the driver), and the
-- driver checks the run's and the task's budgets with it, as for an attempt it runs itself.
--   usage_report: {"usage": {...}, "model": "..."}, the latest report; NULL before the first.
ALTER TABLE _smithers_attempts ADD COLUMN usage_report JSONB;
