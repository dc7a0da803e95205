-- name: create_project
INSERT INTO projects (name) VALUES (%(name)s) RETURNING id, name, created_at;

-- name: get_project_by_name
SELECT id, name, created_at FROM projects WHERE name = %(name)s;

-- name: list_projects
SELECT p.id, p.name, p.created_at,
       (SELECT count(*) FROM api_keys k WHERE k.project_id = p.id AND k.revoked_at IS NULL) AS active_keys
FROM projects AS p ORDER BY p.created_at, p.name;

-- name: count_projects
SELECT count(*) FROM projects;

-- name: insert_key
INSERT INTO api_keys (project_id, kind, key_hash, key_prefix, name, allow)
VALUES (%(project_id)s, %(kind)s, %(key_hash)s, %(key_prefix)s, %(name)s, %(allow)s)
ON CONFLICT (key_hash) DO NOTHING
RETURNING id, project_id, kind, key_prefix, name, allow, created_at, revoked_at;

-- name: list_keys
SELECT k.id, k.project_id, p.name AS project, k.kind, k.key_prefix, k.name, k.allow, k.created_at, k.revoked_at
FROM api_keys AS k JOIN projects AS p ON p.id = k.project_id
WHERE %(project_id)s::uuid IS NULL OR k.project_id = %(project_id)s
ORDER BY p.name, k.created_at;

-- name: revoke_key
UPDATE api_keys SET revoked_at = now()
WHERE (id::text = %(key)s OR key_prefix = %(key)s OR key_hash = %(key_hash)s) AND revoked_at IS NULL
RETURNING id, key_prefix;

-- name: find_active_key
SELECT id, project_id, kind, allow FROM api_keys WHERE key_hash = %(key_hash)s AND revoked_at IS NULL;

-- name: revoke_project_key
-- Revoke one key of a project by id (the admin API and the console).
UPDATE api_keys SET revoked_at = now()
WHERE id = %(key_id)s AND project_id = %(project_id)s AND revoked_at IS NULL
RETURNING id, key_prefix;

-- name: project_by_id
SELECT id, name, created_at FROM projects WHERE id = %(project_id)s;
