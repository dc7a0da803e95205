-- Messaging for operators: subscription groups, users' subscriptions, sending rules, suppressions
-- (messaging/service.py). Every statement is scoped by project.

-- name: group_create
INSERT INTO subscription_groups (project_id, name, channel, kind, default_subscribed)
VALUES (%(project_id)s, %(name)s, %(channel)s, %(kind)s, %(default_subscribed)s)
RETURNING id, name, channel, kind, default_subscribed, created_at, updated_at

-- name: group_list
SELECT id, name, channel, kind, default_subscribed, created_at, updated_at FROM subscription_groups
WHERE project_id = %(project_id)s ORDER BY created_at, id

-- name: group_get
SELECT id, name, channel, kind, default_subscribed, created_at, updated_at FROM subscription_groups
WHERE project_id = %(project_id)s AND id = %(id)s

-- name: group_update
UPDATE subscription_groups
SET name = coalesce(%(name)s, name), default_subscribed = coalesce(%(default_subscribed)s, default_subscribed),
    updated_at = now()
WHERE project_id = %(project_id)s AND id = %(id)s
RETURNING id, name, channel, kind, default_subscribed, created_at, updated_at

-- name: group_delete
DELETE FROM subscription_groups WHERE project_id = %(project_id)s AND id = %(id)s RETURNING id

-- name: user_subscriptions
-- Every group of the project with the user's state: their choice, else the group's default.
SELECT g.id, g.name, g.channel, g.kind, coalesce(s.subscribed, g.default_subscribed) OR g.kind = 'transactional',
       s.source, s.updated_at
FROM subscription_groups AS g
LEFT JOIN subscriptions AS s ON s.group_id = g.id AND s.user_id = %(user_id)s
WHERE g.project_id = %(project_id)s
ORDER BY g.created_at, g.id

-- name: set_subscription
-- A user's choice for a marketing group (transactional groups cannot be left: not matched here).
INSERT INTO subscriptions (user_id, group_id, project_id, subscribed, source)
SELECT %(user_id)s, g.id, g.project_id, %(subscribed)s, %(source)s FROM subscription_groups AS g
WHERE g.id = %(group_id)s AND g.project_id = %(project_id)s AND g.kind = 'marketing'
  AND EXISTS (SELECT 1 FROM users WHERE id = %(user_id)s AND project_id = %(project_id)s)
ON CONFLICT (user_id, group_id) DO UPDATE SET subscribed = excluded.subscribed, source = excluded.source,
    updated_at = now()
RETURNING (xmax = 0) AS created

-- name: settings_get
SELECT quiet_start, quiet_end, timezone, frequency_caps, updated_at FROM messaging_settings
WHERE project_id = %(project_id)s

-- name: settings_put
INSERT INTO messaging_settings (project_id, quiet_start, quiet_end, timezone, frequency_caps)
VALUES (%(project_id)s, %(quiet_start)s, %(quiet_end)s, %(timezone)s, %(frequency_caps)s)
ON CONFLICT (project_id) DO UPDATE SET quiet_start = excluded.quiet_start, quiet_end = excluded.quiet_end,
    timezone = excluded.timezone, frequency_caps = excluded.frequency_caps, updated_at = now()
RETURNING quiet_start, quiet_end, timezone, frequency_caps, updated_at

-- name: suppression_list
SELECT channel, address, reason, message_id, created_at FROM suppressions
WHERE project_id = %(project_id)s AND (%(channel)s::text IS NULL OR channel = %(channel)s)
ORDER BY created_at DESC LIMIT %(limit)s OFFSET %(offset)s

-- name: suppression_add
INSERT INTO suppressions (project_id, channel, address, reason) VALUES (%(project_id)s, %(channel)s, %(address)s, 'manual')
ON CONFLICT DO NOTHING

-- name: suppression_remove
DELETE FROM suppressions WHERE project_id = %(project_id)s AND channel = %(channel)s AND address = %(address)s
RETURNING address

-- name: user_in_project
SELECT id FROM users WHERE id = %(user_id)s AND project_id = %(project_id)s

-- name: template_of_project
SELECT channel FROM templates WHERE id = %(id)s AND project_id = %(project_id)s

-- name: provider_of_project
SELECT channel FROM providers WHERE id = %(id)s AND project_id = %(project_id)s

-- name: resolve_user
SELECT entity_id FROM lunogram_resolve_user(%(project_id)s, %(identifiers)s, true)

-- name: stats_of_journey_steps
-- Messages per send step of a journey: queued, sent, delivered, opened, clicked, bounced, complained,
-- unsubscribed, failed, skipped.
SELECT step, count(*) AS total,
       count(*) FILTER (WHERE status IN ('queued', 'sending')) AS queued,
       count(sent_at) AS sent, count(delivered_at) AS delivered, count(opened_at) AS opened,
       count(clicked_at) AS clicked, count(bounced_at) AS bounced, count(complained_at) AS complained,
       count(unsubscribed_at) AS unsubscribed, count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'skipped') AS skipped
FROM message_outbox WHERE journey_id = %(journey_id)s AND project_id = %(project_id)s
GROUP BY step ORDER BY step
