-- Cancellation asked for by another process (`smithers cancel RUN`): the process driving the run
-- polls this flag and stops as on Ctrl-C. Cleared when the run reaches a final status or resumes.
ALTER TABLE _smithers_runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
