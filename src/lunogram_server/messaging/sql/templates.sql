-- Message templates and snippets (messaging/templates_service.py). Every statement is scoped by project.

-- name: template_count
SELECT count(*) FROM templates WHERE project_id = %(project_id)s;

-- name: template_insert
INSERT INTO templates (project_id, name, channel, default_locale, subscription_group_id, snippets)
VALUES (%(project_id)s, %(name)s, %(channel)s, %(default_locale)s, %(subscription_group_id)s, %(snippets)s)
RETURNING id;

-- name: template_update
UPDATE templates SET
    name = %(name)s,
    default_locale = %(default_locale)s,
    subscription_group_id = %(subscription_group_id)s,
    snippets = %(snippets)s,
    -- never equal to the previous value: (id, updated_at) keys the parsed-template caches
    updated_at = greatest(now(), updated_at + interval '1 microsecond')
WHERE id = %(template_id)s AND project_id = %(project_id)s;

-- name: template_variants_delete
DELETE FROM template_variants WHERE template_id = %(template_id)s;

-- name: template_variants_insert
INSERT INTO template_variants (template_id, locale, content)
SELECT %(template_id)s, v.key, v.value FROM jsonb_each(%(variants)s) AS v;

-- name: template_for_update
-- the stored template an update starts from, locked until its transaction ends
SELECT t.name, t.channel, t.default_locale, t.subscription_group_id,
       (SELECT jsonb_object_agg(v.locale, v.content) FROM template_variants AS v WHERE v.template_id = t.id)
FROM templates AS t WHERE t.id = %(template_id)s AND t.project_id = %(project_id)s
FOR UPDATE;

-- name: template_json
SELECT jsonb_build_object(
    'id', t.id, 'name', t.name, 'channel', t.channel, 'default_locale', t.default_locale,
    'subscription_group_id', t.subscription_group_id, 'snippets', to_jsonb(t.snippets),
    'variants', coalesce((SELECT jsonb_object_agg(v.locale, v.content)
                          FROM template_variants AS v WHERE v.template_id = t.id), '{}'::jsonb),
    'created_at', t.created_at, 'updated_at', t.updated_at)::text
FROM templates AS t WHERE t.id = %(template_id)s AND t.project_id = %(project_id)s;

-- name: template_page
SELECT coalesce(jsonb_agg(jsonb_build_object(
           'id', t.id, 'name', t.name, 'channel', t.channel, 'default_locale', t.default_locale,
           'subscription_group_id', t.subscription_group_id,
           'locales', (SELECT coalesce(jsonb_agg(v.locale ORDER BY v.locale), '[]'::jsonb)
                       FROM template_variants AS v WHERE v.template_id = t.id),
           'created_at', t.created_at, 'updated_at', t.updated_at) ORDER BY t.created_at DESC, t.id DESC),
       '[]'::jsonb)::text
FROM (SELECT * FROM templates
      WHERE project_id = %(project_id)s AND (%(channel)s::text IS NULL OR channel = %(channel)s)
      ORDER BY created_at DESC, id DESC LIMIT %(limit)s OFFSET %(offset)s) AS t;

-- name: template_delete
DELETE FROM templates WHERE id = %(template_id)s AND project_id = %(project_id)s;

-- name: template_definitions
-- what the renderer needs, for the sender and the preview
SELECT t.id, t.name, t.channel, t.default_locale, t.subscription_group_id, t.snippets, t.updated_at,
       (SELECT jsonb_object_agg(v.locale, v.content) FROM template_variants AS v WHERE v.template_id = t.id)
FROM templates AS t WHERE t.project_id = %(project_id)s AND t.id = ANY (%(ids)s);

-- name: snippets_lock
-- the named snippets that exist, held (FOR SHARE) so that none is deleted before the referrer commits
SELECT name FROM snippets WHERE project_id = %(project_id)s AND name = ANY (%(names)s)
ORDER BY name FOR SHARE;

-- name: snippet_closure
-- the named snippets and every snippet they render, transitively (UNION stops at cycles)
WITH RECURSIVE closure (name) AS (
    SELECT unnest(%(names)s::text[])
    UNION
    SELECT unnest(s.snippets) FROM snippets AS s JOIN closure AS c ON s.name = c.name
    WHERE s.project_id = %(project_id)s
)
SELECT s.name, s.source FROM snippets AS s
WHERE s.project_id = %(project_id)s AND s.name IN (SELECT name FROM closure);

-- name: snippet_count
SELECT count(*) FROM snippets WHERE project_id = %(project_id)s;

-- name: snippet_insert
INSERT INTO snippets (project_id, name, source, snippets)
VALUES (%(project_id)s, %(name)s, %(source)s, %(snippets)s)
ON CONFLICT (project_id, name) DO NOTHING
RETURNING id;

-- name: snippet_for_update
SELECT id FROM snippets WHERE project_id = %(project_id)s AND name = %(name)s FOR UPDATE;

-- name: snippet_update
UPDATE snippets SET source = %(source)s, snippets = %(snippets)s,
                    updated_at = greatest(now(), updated_at + interval '1 microsecond')
WHERE project_id = %(project_id)s AND name = %(name)s;

-- name: snippet_json
SELECT jsonb_build_object('id', s.id, 'name', s.name, 'source', s.source, 'snippets', to_jsonb(s.snippets),
                          'created_at', s.created_at, 'updated_at', s.updated_at)::text
FROM snippets AS s WHERE s.project_id = %(project_id)s AND s.name = %(name)s;

-- name: snippet_page
SELECT coalesce(jsonb_agg(jsonb_build_object(
           'id', s.id, 'name', s.name, 'snippets', to_jsonb(s.snippets), 'size', length(s.source),
           'created_at', s.created_at, 'updated_at', s.updated_at) ORDER BY s.name), '[]'::jsonb)::text
FROM (SELECT * FROM snippets WHERE project_id = %(project_id)s
      ORDER BY name LIMIT %(limit)s OFFSET %(offset)s) AS s;

-- name: snippet_users
-- who renders a snippet (after the snippet's row is locked FOR UPDATE, so none can be added meanwhile)
(SELECT 'template ' || quote_literal(name) FROM templates
 WHERE project_id = %(project_id)s AND %(name)s = ANY (snippets) ORDER BY name LIMIT 10)
UNION ALL
(SELECT 'snippet ' || quote_literal(name) FROM snippets
 WHERE project_id = %(project_id)s AND %(name)s = ANY (snippets) ORDER BY name LIMIT 10);

-- name: snippet_delete
DELETE FROM snippets WHERE project_id = %(project_id)s AND name = %(name)s;

-- name: preview_user_by_id
SELECT lunogram_user_json(u.id)::text FROM users AS u WHERE u.id = %(user_id)s AND u.project_id = %(project_id)s;

-- name: preview_user_by_identifiers
-- the user any of the identifiers names (the first that exists, in the order given); no profile is created
SELECT lunogram_user_json(i.user_id)::text
FROM jsonb_array_elements(%(identifiers)s) WITH ORDINALITY AS x(ident, n)
JOIN user_identifiers AS i
  ON i.project_id = %(project_id)s AND i.source = x.ident ->> 'source' AND i.external_id = x.ident ->> 'external_id'
ORDER BY x.n LIMIT 1;

-- name: preview_organization
-- the organization of the user's oldest membership, shaped as templates see `organization`
SELECT jsonb_build_object(
    'id', o.id, 'name', o.name, 'data', o.data, 'membership', m.data,
    'identifiers', coalesce((SELECT jsonb_agg(jsonb_build_object('source', i.source, 'external_id', i.external_id)
                                              ORDER BY i.created_at, i.id)
                             FROM organization_identifiers AS i WHERE i.organization_id = o.id), '[]'::jsonb))::text
FROM organization_members AS m JOIN organizations AS o ON o.id = m.organization_id
WHERE m.user_id = %(user_id)s AND m.project_id = %(project_id)s
ORDER BY m.created_at, m.organization_id LIMIT 1;
