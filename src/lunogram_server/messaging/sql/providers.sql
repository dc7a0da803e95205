-- Providers (messaging/providers_service.py). Every statement is scoped by project.

-- name: provider_count
SELECT count(*) FROM providers WHERE project_id = %(project_id)s;

-- name: provider_insert
INSERT INTO providers (id, project_id, channel, kind, name, config, secrets, secret_fields, rate_per_second,
                       is_default)
VALUES (%(id)s, %(project_id)s, %(channel)s, %(kind)s, %(name)s, %(config)s, %(secrets)s, %(secret_fields)s,
        %(rate_per_second)s,
        coalesce(%(is_default)s, NOT EXISTS (SELECT 1 FROM providers
                                             WHERE project_id = %(project_id)s AND channel = %(channel)s)))
RETURNING id;

-- name: provider_clear_default
-- before making another provider the channel's default
UPDATE providers SET is_default = false, updated_at = now()
WHERE project_id = %(project_id)s AND channel = %(channel)s AND is_default AND id <> %(id)s;

-- name: provider_get
SELECT id, project_id, channel, kind, name, config, secrets, secret_fields, rate_per_second, is_default,
       created_at, updated_at
FROM providers WHERE id = %(id)s AND project_id = %(project_id)s;

-- name: provider_get_for_update
SELECT id, project_id, channel, kind, name, config, secrets, secret_fields, rate_per_second, is_default,
       created_at, updated_at
FROM providers WHERE id = %(id)s AND project_id = %(project_id)s FOR UPDATE;

-- name: provider_page
SELECT id, project_id, channel, kind, name, config, NULL::bytea AS secrets, secret_fields, rate_per_second,
       is_default, created_at, updated_at
FROM providers
WHERE project_id = %(project_id)s AND (%(channel)s::text IS NULL OR channel = %(channel)s)
ORDER BY channel, created_at, id
LIMIT %(limit)s OFFSET %(offset)s;

-- name: provider_update
UPDATE providers SET
    name = %(name)s, config = %(config)s, secrets = %(secrets)s, secret_fields = %(secret_fields)s,
    rate_per_second = %(rate_per_second)s, is_default = %(is_default)s, updated_at = clock_timestamp()
WHERE id = %(id)s AND project_id = %(project_id)s;

-- name: provider_delete
DELETE FROM providers WHERE id = %(id)s AND project_id = %(project_id)s;

-- name: provider_choose
-- the provider a send on `channel` goes through: the channel's default among `kinds` (all kinds when NULL),
-- else the first of the preferred kinds, oldest first
SELECT id, project_id, channel, kind, name, config, secrets, secret_fields, rate_per_second, is_default,
       created_at, updated_at
FROM providers
WHERE project_id = %(project_id)s AND channel = %(channel)s
  AND (%(kinds)s::text[] IS NULL OR kind = ANY (%(kinds)s::text[]))
ORDER BY is_default DESC, coalesce(array_position(%(kinds)s::text[], kind), 0), created_at, id
LIMIT 1;

-- name: provider_sealed_batch
-- rows whose secrets a re-seal looks at, in id order from `after`
SELECT id, secrets FROM providers
WHERE secrets IS NOT NULL AND id > %(after)s
ORDER BY id LIMIT %(limit)s;

-- name: provider_reseal
UPDATE providers SET secrets = %(secrets)s WHERE id = %(id)s AND secrets = %(old)s;
