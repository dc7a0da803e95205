-- Finding users and organizations (console/search.py). Every query is one index range or probe, bounded by
-- `limit`: prefixes walk user_identifiers_prefix / users_email_prefix (text_pattern_ops, byte-wise ranges a
-- generic plan can use), data containment uses users_data (GIN), recent ones the (project_id, id) index.

-- name: users_by_identifier
SELECT u.id, i.source, i.external_id, u.email, u.created_at
FROM user_identifiers AS i JOIN users AS u ON u.id = i.user_id
WHERE i.project_id = %(project_id)s AND i.external_id ~>=~ %(low)s AND i.external_id ~<~ %(high)s
ORDER BY i.external_id USING ~<~
LIMIT %(limit)s;

-- name: users_by_email
SELECT u.id, i.source, i.external_id, u.email, u.created_at
FROM users AS u
LEFT JOIN LATERAL (SELECT source, external_id FROM user_identifiers WHERE user_id = u.id
                   ORDER BY created_at LIMIT 1) AS i ON true
WHERE u.project_id = %(project_id)s AND u.email IS NOT NULL
  AND lower(u.email) ~>=~ %(low)s AND lower(u.email) ~<~ %(high)s
ORDER BY lower(u.email) USING ~<~
LIMIT %(limit)s;

-- name: users_by_data
-- No ORDER BY: the bitmap scan stops at `limit` rows however many match (sorting 300,000 matches to show 50
-- would cost a scan of them all).
SELECT u.id, i.source, i.external_id, u.email, u.created_at
FROM (SELECT id, email, created_at FROM users WHERE project_id = %(project_id)s AND data @> %(data)s
      LIMIT %(limit)s) AS u
LEFT JOIN LATERAL (SELECT source, external_id FROM user_identifiers WHERE user_id = u.id
                   ORDER BY created_at LIMIT 1) AS i ON true;

-- name: users_by_id
SELECT u.id, i.source, i.external_id, u.email, u.created_at
FROM users AS u
LEFT JOIN LATERAL (SELECT source, external_id FROM user_identifiers WHERE user_id = u.id
                   ORDER BY created_at LIMIT 1) AS i ON true
WHERE u.project_id = %(project_id)s AND u.id = %(id)s;

-- name: users_recent
SELECT u.id, i.source, i.external_id, u.email, u.created_at
FROM (SELECT id, email, created_at FROM users WHERE project_id = %(project_id)s ORDER BY id DESC
      LIMIT %(limit)s) AS u
LEFT JOIN LATERAL (SELECT source, external_id FROM user_identifiers WHERE user_id = u.id
                   ORDER BY created_at LIMIT 1) AS i ON true
ORDER BY u.id DESC;

-- name: organizations_by_identifier
SELECT o.id, i.source, i.external_id, o.name, o.created_at
FROM organization_identifiers AS i JOIN organizations AS o ON o.id = i.organization_id
WHERE i.project_id = %(project_id)s AND i.external_id ~>=~ %(low)s AND i.external_id ~<~ %(high)s
ORDER BY i.external_id USING ~<~
LIMIT %(limit)s;

-- name: organizations_by_name
SELECT o.id, i.source, i.external_id, o.name, o.created_at
FROM organizations AS o
LEFT JOIN LATERAL (SELECT source, external_id FROM organization_identifiers WHERE organization_id = o.id
                   ORDER BY created_at LIMIT 1) AS i ON true
WHERE o.project_id = %(project_id)s AND o.name IS NOT NULL
  AND lower(o.name) ~>=~ %(low)s AND lower(o.name) ~<~ %(high)s
ORDER BY lower(o.name) USING ~<~
LIMIT %(limit)s;

-- name: organizations_by_data
SELECT o.id, i.source, i.external_id, o.name, o.created_at
FROM (SELECT id, name, created_at FROM organizations WHERE project_id = %(project_id)s AND data @> %(data)s
      LIMIT %(limit)s) AS o
LEFT JOIN LATERAL (SELECT source, external_id FROM organization_identifiers WHERE organization_id = o.id
                   ORDER BY created_at LIMIT 1) AS i ON true;

-- name: organizations_by_id
SELECT o.id, i.source, i.external_id, o.name, o.created_at
FROM organizations AS o
LEFT JOIN LATERAL (SELECT source, external_id FROM organization_identifiers WHERE organization_id = o.id
                   ORDER BY created_at LIMIT 1) AS i ON true
WHERE o.project_id = %(project_id)s AND o.id = %(id)s;

-- name: organizations_recent
SELECT o.id, i.source, i.external_id, o.name, o.created_at
FROM (SELECT id, name, created_at FROM organizations WHERE project_id = %(project_id)s ORDER BY id DESC
      LIMIT %(limit)s) AS o
LEFT JOIN LATERAL (SELECT source, external_id FROM organization_identifiers WHERE organization_id = o.id
                   ORDER BY created_at LIMIT 1) AS i ON true
ORDER BY o.id DESC;
