-- CSV imports into static lists (lists/imports.py).

-- name: create
-- rows: [line, identifiers, cells], the cells aligned with columns (null: an empty cell)
INSERT INTO list_imports (project_id, list_id, columns, rows, total_rows, errors, error_count, status)
SELECT %(project_id)s, %(list_id)s, %(columns)s, r.rows, %(total_rows)s, %(errors)s, %(error_count)s,
       CASE WHEN jsonb_array_length(r.rows) = 0 THEN 'done' ELSE 'queued' END
FROM (SELECT %(rows)s::jsonb AS rows) AS r
RETURNING id;

-- name: detail
SELECT jsonb_build_object(
    'id', id, 'list_id', list_id, 'status', status, 'total_rows', total_rows,
    'processed_rows', imported + error_count, 'imported', imported, 'failed', error_count,
    'errors', errors, 'created_at', created_at, 'updated_at', updated_at)::text
FROM list_imports WHERE id = %(import_id)s AND list_id = %(list_id)s AND project_id = %(project_id)s;

-- name: claim
SELECT id, project_id, list_id, processed_rows FROM list_imports
WHERE status <> 'done'
ORDER BY created_at
LIMIT 1
FOR UPDATE SKIP LOCKED;

-- name: chunk
-- each row's upsert fields: {data: {column: cell, ...}} from its non-empty cells, {} without any (rows of
-- imports stored before columns were kept apart carry their fields whole)
SELECT t.r ->> 0, t.r -> 1,
       CASE WHEN i.columns IS NULL THEN t.r -> 2
            ELSE coalesce((SELECT jsonb_build_object('data', jsonb_object_agg(c.name, v.value))
                           FROM jsonb_array_elements_text(t.r -> 2) WITH ORDINALITY AS v(value, k)
                           JOIN unnest(i.columns) WITH ORDINALITY AS c(name, k) USING (k)
                           WHERE v.value IS NOT NULL
                           HAVING count(*) > 0), jsonb_build_object()) END
FROM list_imports AS i, jsonb_array_elements(i.rows) WITH ORDINALITY AS t(r, n)
WHERE i.id = %(import_id)s AND t.n > %(offset)s AND t.n <= %(offset)s + %(limit)s
ORDER BY t.n;

-- name: apply
-- upsert each row's user (created if new, data merged) and add it to the list; entries recorded
SELECT lunogram_list_add(%(project_id)s, %(list_id)s, ARRAY(
    SELECT DISTINCT (lunogram_upsert_user(%(project_id)s, t.identifiers, t.fields) ->> 'id')::uuid
    FROM jsonb_to_recordset(%(rows)s) AS t(identifiers jsonb, fields jsonb)));

-- name: progress
UPDATE list_imports SET
    processed_rows = processed_rows + %(done)s,
    imported = imported + %(imported)s,
    errors = CASE WHEN jsonb_array_length(errors) < 1000
                  THEN errors || %(errors)s ELSE errors END,
    error_count = error_count + jsonb_array_length(%(errors)s),
    status = CASE WHEN processed_rows + %(done)s >= jsonb_array_length(rows) THEN 'done' ELSE 'running' END,
    rows = CASE WHEN processed_rows + %(done)s >= jsonb_array_length(rows) THEN '[]'::jsonb ELSE rows END,
    updated_at = now()
WHERE id = %(import_id)s;

-- name: recent
-- A list's latest imports, newest first (the list page shows their progress).
SELECT coalesce(jsonb_agg(jsonb_build_object(
    'id', i.id, 'status', i.status, 'total_rows', i.total_rows, 'processed_rows', i.imported + i.error_count,
    'imported', i.imported, 'failed', i.error_count, 'created_at', i.created_at) ORDER BY i.created_at DESC),
    '[]'::jsonb)::text
FROM (SELECT * FROM list_imports WHERE list_id = %(list_id)s AND project_id = %(project_id)s
      ORDER BY created_at DESC LIMIT %(limit)s) AS i;
