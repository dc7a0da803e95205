-- name: delete
SELECT lunogram_delete_user(%(project_id)s, %(identifiers)s);

-- name: detail_by_id
SELECT (lunogram_user_json(u.id) || jsonb_build_object('memberships', coalesce((
           SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object('organization_name', o.name)) || jsonb_build_object(
                      'organization_id', m.organization_id, 'data', m.data,
                      'created_at', m.created_at, 'updated_at', m.updated_at) ORDER BY m.created_at)
           FROM organization_members AS m JOIN organizations AS o ON o.id = m.organization_id
           WHERE m.user_id = u.id), '[]'::jsonb)))::text
FROM users AS u WHERE u.id = %(id)s AND u.project_id = %(project_id)s;

-- name: id_by_identifier
SELECT user_id FROM user_identifiers
WHERE project_id = %(project_id)s AND source = %(source)s AND external_id = %(external_id)s;
