DROP INDEX IF EXISTS dead_letters_unresolved;
ALTER TABLE dead_letters
    DROP CONSTRAINT IF EXISTS dead_letters_resolution_complete,
    DROP COLUMN resolution_note,
    DROP COLUMN resolved_by,
    DROP COLUMN resolved_at,
    DROP COLUMN resolution;
