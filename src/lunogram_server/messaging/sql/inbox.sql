-- The in-app inbox (messaging/inbox.py); the writes are functions (functions.sql). Scoped by project.

-- name: inbox_post
SELECT lunogram_inbox_post(%(project_id)s, %(kind)s, %(items)s);

-- name: inbox_mark
SELECT lunogram_inbox_mark(%(project_id)s, %(kind)s, %(what)s, %(items)s);

-- name: inbox_deliver
SELECT lunogram_inbox_deliver(%(project_id)s, %(user_id)s, %(message_id)s, %(content)s, %(data)s, %(tags)s,
                              %(priority)s, %(source)s, %(expires_at)s);

-- name: inbox_page
-- A target's feed on one channel: what shows now (scheduled_at passed, not expired), newest first; without a
-- status, everything not archived. `total` counts the whole filtered feed (at most the cap per channel).
-- No row when no profile of the kind has the identifier.
WITH owner AS (
    SELECT user_id AS id FROM user_identifiers
    WHERE %(kind)s = 'user' AND project_id = %(project_id)s AND source = %(source)s
      AND external_id = %(external_id)s
    UNION ALL
    SELECT organization_id FROM organization_identifiers
    WHERE %(kind)s = 'organization' AND project_id = %(project_id)s AND source = %(source)s
      AND external_id = %(external_id)s
), shown AS (
    SELECT m AS message, m.scheduled_at, m.id FROM inbox_messages AS m
    WHERE m.owner_id = (SELECT id FROM owner) AND m.owner_kind = %(kind)s AND m.project_id = %(project_id)s
      AND m.channel = %(channel)s
      AND m.scheduled_at <= now() AND (m.expires_at IS NULL OR m.expires_at > now())
      AND CASE %(status)s::text
              WHEN 'unread' THEN m.read_at IS NULL AND m.archived_at IS NULL
              WHEN 'read' THEN m.read_at IS NOT NULL AND m.archived_at IS NULL
              WHEN 'archived' THEN m.archived_at IS NOT NULL
              ELSE m.archived_at IS NULL END
      AND (%(tags)s::text[] IS NULL OR m.tags @> %(tags)s::text[])
      AND (%(message_source)s::text IS NULL OR m.source = %(message_source)s::text)
      AND (%(priority)s::smallint IS NULL OR m.priority = %(priority)s::smallint)
)
SELECT jsonb_build_object(
    'results', coalesce((
        SELECT jsonb_agg(lunogram_inbox_json(p.message) ORDER BY p.scheduled_at DESC, p.id DESC)
        FROM (SELECT * FROM shown ORDER BY scheduled_at DESC, id DESC
              LIMIT %(limit)s OFFSET %(offset)s) AS p), '[]'::jsonb),
    'total', (SELECT count(*) FROM shown),
    'limit', %(limit)s::integer,
    'offset', %(offset)s::integer)::text
FROM owner;

-- name: inbox_count
-- unread and total of what shows now and is not archived; no row when no profile has the identifier
WITH owner AS (
    SELECT user_id AS id FROM user_identifiers
    WHERE %(kind)s = 'user' AND project_id = %(project_id)s AND source = %(source)s
      AND external_id = %(external_id)s
    UNION ALL
    SELECT organization_id FROM organization_identifiers
    WHERE %(kind)s = 'organization' AND project_id = %(project_id)s AND source = %(source)s
      AND external_id = %(external_id)s
)
SELECT count(m.id) FILTER (WHERE m.read_at IS NULL) AS unread, count(m.id) AS total
FROM owner
LEFT JOIN inbox_messages AS m
    ON m.owner_id = owner.id AND m.owner_kind = %(kind)s AND m.project_id = %(project_id)s
   AND m.channel = %(channel)s AND m.archived_at IS NULL
   AND m.scheduled_at <= now() AND (m.expires_at IS NULL OR m.expires_at > now())
GROUP BY owner.id;
