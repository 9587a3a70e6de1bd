-- Frames as data (the SQLite twin is 0011): the rendered tree as JSON; `tree` keeps the text view
-- rendered from it; frames recorded before this migration have no structure (NULL) and are read
-- back from their text.
ALTER TABLE _smithers_frames ADD COLUMN structure TEXT;
