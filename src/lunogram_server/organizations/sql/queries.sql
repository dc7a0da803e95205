-- name: delete
SELECT lunogram_delete_organization(%(project_id)s, %(identifiers)s);

-- name: add_member
SELECT lunogram_add_member(%(project_id)s, %(organization)s, %(user)s, %(data)s);

-- name: remove_member
SELECT lunogram_remove_member(%(project_id)s, %(organization)s, %(user)s);

-- name: detail_by_id
SELECT (lunogram_organization_json(o.id) || jsonb_build_object(
           'member_count', (SELECT count(*) FROM organization_members WHERE organization_id = o.id),
           'members', coalesce((
               SELECT jsonb_agg(jsonb_build_object('user_id', m.user_id, 'data', m.data,
                                                   'created_at', m.created_at, 'updated_at', m.updated_at)
                                ORDER BY m.created_at, m.user_id)
               FROM (SELECT * FROM organization_members WHERE organization_id = o.id
                     ORDER BY created_at, user_id LIMIT %(member_limit)s) AS m), '[]'::jsonb)))::text
FROM organizations AS o WHERE o.id = %(id)s AND o.project_id = %(project_id)s;

-- name: id_by_identifier
SELECT organization_id FROM organization_identifiers
WHERE project_id = %(project_id)s AND source = %(source)s AND external_id = %(external_id)s;
