-- Lists: definitions and static members (lists/service.py). Evaluation: sql/membership.sql.

-- name: list_json
SELECT jsonb_build_object(
    'id', l.id, 'project_id', l.project_id, 'name', l.name, 'kind', l.kind, 'rule', l.rule,
    'state', CASE WHEN l.computed_version < l.rule_version THEN 'recomputing'
                  WHEN l.error IS NOT NULL THEN 'failed' ELSE 'ready' END,
    'error', l.error, 'rule_version', l.rule_version, 'computed_at', l.computed_at,
    'progress', (SELECT jsonb_build_object('done', p.done, 'total', p.total, 'started_at', p.started_at)
                 FROM list_recompute_progress AS p
                 WHERE p.list_id = l.id AND l.computed_version < l.rule_version),
    'member_count', (SELECT count(*) FROM list_members AS m WHERE m.list_id = l.id),
    'created_at', l.created_at, 'updated_at', l.updated_at)::text
FROM lists AS l WHERE l.id = %(list_id)s AND l.project_id = %(project_id)s;

-- name: create
INSERT INTO lists (project_id, name, kind, rule, event_names, uses_time, uses_profile, referenced_lists,
                   computed_version)
VALUES (%(project_id)s, %(name)s, %(kind)s, %(rule)s, %(event_names)s, %(uses_time)s, %(uses_profile)s,
        %(referenced_lists)s, CASE WHEN %(kind)s = 'static' THEN 1 ELSE 0 END)
RETURNING id;

-- name: update
UPDATE lists SET
    name = coalesce(%(name)s, name),
    rule = CASE WHEN %(rule_given)s THEN %(rule)s ELSE rule END,
    event_names = CASE WHEN %(rule_given)s THEN %(event_names)s ELSE event_names END,
    uses_time = CASE WHEN %(rule_given)s THEN %(uses_time)s ELSE uses_time END,
    uses_profile = CASE WHEN %(rule_given)s THEN %(uses_profile)s ELSE uses_profile END,
    referenced_lists = CASE WHEN %(rule_given)s THEN %(referenced_lists)s ELSE referenced_lists END,
    rule_version = rule_version + CASE WHEN %(rule_given)s THEN 1 ELSE 0 END,
    updated_at = now()
WHERE id = %(list_id)s AND project_id = %(project_id)s
RETURNING kind;

-- name: delete
DELETE FROM lists WHERE id = %(list_id)s AND project_id = %(project_id)s;

-- name: page
SELECT coalesce(jsonb_agg(jsonb_build_object(
           'id', l.id, 'name', l.name, 'kind', l.kind,
           'state', CASE WHEN l.computed_version < l.rule_version THEN 'recomputing'
                         WHEN l.error IS NOT NULL THEN 'failed' ELSE 'ready' END,
           'created_at', l.created_at, 'updated_at', l.updated_at) ORDER BY l.created_at DESC, l.id DESC),
       '[]'::jsonb)::text
FROM (SELECT * FROM lists WHERE project_id = %(project_id)s
      ORDER BY created_at DESC, id DESC LIMIT %(limit)s OFFSET %(offset)s) AS l;

-- name: kind_of
SELECT kind FROM lists WHERE id = %(list_id)s AND project_id = %(project_id)s FOR SHARE;

-- name: projects_lists
SELECT id FROM lists WHERE project_id = %(project_id)s AND id = ANY (%(ids)s);

-- name: references_of
SELECT id, referenced_lists FROM lists WHERE project_id = %(project_id)s AND id = ANY (%(ids)s);

-- name: lock_rules
SELECT pg_advisory_xact_lock(hashtextextended(%(project_id)s::text || ':list-rules', 0));

-- name: members_page
SELECT jsonb_build_object(
    'members', coalesce(jsonb_agg(jsonb_build_object(
        'user_id', m.user_id, 'joined_at', m.created_at,
        'identifier', (SELECT coalesce(jsonb_agg(jsonb_build_object('source', i.source, 'external_id', i.external_id)
                                                 ORDER BY i.created_at, i.id), '[]'::jsonb)
                       FROM user_identifiers AS i WHERE i.user_id = m.user_id))
        ORDER BY m.created_at DESC, m.user_id DESC), '[]'::jsonb),
    'next_cursor', CASE WHEN count(*) = %(limit)s
                        THEN (array_agg(m.created_at::text || '|' || m.user_id::text
                                        ORDER BY m.created_at, m.user_id))[1] END)::text
FROM (SELECT * FROM list_members
      WHERE list_id = %(list_id)s
        AND (%(before_at)s::timestamptz IS NULL OR (created_at, user_id) < (%(before_at)s, %(before_id)s::uuid))
      ORDER BY created_at DESC, user_id DESC LIMIT %(limit)s) AS m;

-- name: add_members
-- resolve (creating users named for the first time: writes never drop data), then add; entries recorded
SELECT lunogram_list_add(%(project_id)s, %(list_id)s, ARRAY(
    SELECT DISTINCT r.entity_id
    FROM jsonb_array_elements(%(identifiers)s) AS t(ids),
         LATERAL lunogram_resolve_user(%(project_id)s, t.ids, true) AS r));

-- name: remove_members
SELECT lunogram_list_remove(%(project_id)s, %(list_id)s, ARRAY(
    SELECT DISTINCT r.entity_id
    FROM jsonb_array_elements(%(identifiers)s) AS t(ids),
         LATERAL lunogram_resolve_user(%(project_id)s, t.ids, false) AS r));

-- name: preview_count
-- Users a rule matches now (the list page's live count while a rule is edited), at most %(cap)s.
SELECT count(*) FROM (
    SELECT 1 FROM users AS u WHERE u.project_id = %(project_id)s AND {predicate} LIMIT %(cap)s
) AS matching;

-- name: lists_of_user
-- The lists a user is in, newest membership first (a profile page; list_members_user finds them).
SELECT l.id, l.name, l.kind, m.created_at AS joined_at
FROM list_members AS m JOIN lists AS l ON l.id = m.list_id
WHERE m.user_id = %(user_id)s AND l.project_id = %(project_id)s
ORDER BY m.created_at DESC
LIMIT %(limit)s;
