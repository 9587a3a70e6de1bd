-- Frames as data: the rendered tree as JSON (tag, id, label, agent, mounted, props, children).
-- `tree` keeps the text view rendered from it; frames recorded before this migration have no
-- structure (NULL) and are read back from their text.
ALTER TABLE _smithers_frames ADD COLUMN structure TEXT;
