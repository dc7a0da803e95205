-- CSV imports into static lists: the parsed rows wait here and are applied in chunks by the lists loop.
CREATE TABLE list_imports (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id      uuid NOT NULL,
    list_id         uuid NOT NULL REFERENCES lists (id) ON DELETE CASCADE,
    status          text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'done')),
    rows            jsonb NOT NULL,                 -- [[line, identifier, data], ...] rows that parsed
    total_rows      integer NOT NULL,               -- data rows in the file, good and bad
    processed_rows  integer NOT NULL DEFAULT 0,     -- of `rows`, applied so far
    imported        integer NOT NULL DEFAULT 0,
    errors          jsonb NOT NULL DEFAULT '[]',    -- [{line, error}], the first 1,000
    error_count     integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX list_imports_pending ON list_imports (created_at) WHERE status <> 'done';
CREATE INDEX list_imports_list ON list_imports (list_id, created_at DESC);
