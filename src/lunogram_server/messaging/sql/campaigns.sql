-- Campaigns (messaging/campaigns.py): one template on one channel to a list, now or at a set time.

-- name: create
INSERT INTO campaigns (project_id, name, list_id, template_id, channel, provider_id, data)
SELECT %(project_id)s, %(name)s, l.id, t.id, t.channel, %(provider_id)s, %(data)s
FROM lists AS l, templates AS t
WHERE l.id = %(list_id)s AND l.project_id = %(project_id)s AND t.id = %(template_id)s AND t.project_id = %(project_id)s
RETURNING id

-- name: lock
SELECT id, status, send_at, local_time FROM campaigns WHERE id = %(id)s AND project_id = %(project_id)s FOR UPDATE

-- name: schedule
UPDATE campaigns SET status = 'scheduled', send_at = %(send_at)s, local_time = %(local_time)s, updated_at = now()
WHERE id = %(id)s

-- name: pause
WITH campaign AS (
    UPDATE campaigns SET status = 'paused', data = data || jsonb_build_object('_resume', status), updated_at = now()
    WHERE id = %(id)s
)
UPDATE message_outbox SET held_at = next_attempt_at, next_attempt_at = 'infinity'
WHERE campaign_id = %(id)s AND status = 'queued' AND held_at IS NULL

-- name: resume
WITH campaign AS (
    UPDATE campaigns SET status = coalesce(data ->> '_resume', 'sending'), data = data - '_resume', updated_at = now()
    WHERE id = %(id)s
)
UPDATE message_outbox SET next_attempt_at = held_at, held_at = NULL
WHERE campaign_id = %(id)s AND status = 'queued' AND held_at IS NOT NULL

-- name: cancel
WITH campaign AS (
    UPDATE campaigns SET status = 'cancelled', finished_at = now(), updated_at = now() WHERE id = %(id)s
)
UPDATE message_outbox SET status = 'cancelled', reason = 'the campaign was cancelled', held_at = NULL, updated_at = now()
WHERE campaign_id = %(id)s AND status = 'queued'

-- name: claim
-- A campaign whose time came (its earliest recipients', for local-time sends: 14 hours early, the furthest
-- timezone ahead) or that is queuing already; locked, so one queuer takes it at a time.
SELECT id, project_id, list_id, template_id, channel, provider_id, send_at, local_time, cursor, total, status, data
FROM campaigns
WHERE status IN ('scheduled', 'queuing')
  AND send_at <= %(now)s + CASE WHEN local_time THEN interval '14 hours' ELSE interval '0' END
ORDER BY send_at
LIMIT 1
FOR UPDATE SKIP LOCKED

-- name: count_members
SELECT count(*) FROM list_members WHERE list_id = %(list_id)s

-- name: chunk
SELECT m.user_id, u.timezone FROM list_members AS m JOIN users AS u ON u.id = m.user_id
WHERE m.list_id = %(list_id)s AND m.user_id > %(after)s
ORDER BY m.user_id LIMIT %(limit)s

-- name: queue
INSERT INTO message_outbox (project_id, user_id, channel, template_id, provider_id, campaign_id, data, marketing,
                            next_attempt_at)
SELECT %(project_id)s, q.user_id, %(channel)s, %(template_id)s, %(provider_id)s, %(campaign_id)s, %(data)s, true, q.at
FROM unnest(%(users)s::uuid[], %(ats)s::timestamptz[]) AS q(user_id, at)

-- name: advance
UPDATE campaigns SET cursor = %(cursor)s, queued = queued + %(queued)s, total = coalesce(total, %(total)s),
    status = %(status)s, started_at = coalesce(started_at, now()), updated_at = now()
WHERE id = %(id)s

-- name: finish
-- Campaigns whose every message has been dealt with.
UPDATE campaigns AS c SET status = 'done', finished_at = now(), updated_at = now()
WHERE c.status = 'sending'
  AND NOT EXISTS (SELECT 1 FROM message_outbox AS m
                  WHERE m.campaign_id = c.id AND m.status IN ('queued', 'sending'))
RETURNING id

-- name: detail
SELECT jsonb_build_object(
    'id', c.id, 'name', c.name, 'list_id', c.list_id, 'template_id', c.template_id, 'channel', c.channel,
    'provider_id', c.provider_id, 'send_at', c.send_at, 'local_time', c.local_time, 'status', c.status,
    'data', c.data - '_resume', 'created_at', c.created_at, 'updated_at', c.updated_at,
    'started_at', c.started_at, 'finished_at', c.finished_at,
    'progress', jsonb_build_object('recipients', c.total, 'queued', c.queued),
    'stats', (SELECT jsonb_build_object(
                  'pending', count(*) FILTER (WHERE m.status IN ('queued', 'sending')),
                  'sent', count(m.sent_at), 'delivered', count(m.delivered_at), 'opened', count(m.opened_at),
                  'clicked', count(m.clicked_at), 'bounced', count(m.bounced_at),
                  'complained', count(m.complained_at), 'unsubscribed', count(m.unsubscribed_at),
                  'failed', count(*) FILTER (WHERE m.status = 'failed'),
                  'skipped', count(*) FILTER (WHERE m.status = 'skipped'),
                  'cancelled', count(*) FILTER (WHERE m.status = 'cancelled'))
              FROM message_outbox AS m WHERE m.campaign_id = c.id))
FROM campaigns AS c WHERE c.id = %(id)s AND c.project_id = %(project_id)s

-- name: page
SELECT jsonb_build_object('id', id, 'name', name, 'channel', channel, 'status', status, 'send_at', send_at,
                          'created_at', created_at)
FROM campaigns WHERE project_id = %(project_id)s
ORDER BY created_at DESC, id DESC LIMIT %(limit)s OFFSET %(offset)s

-- name: timeline
-- Sends, opens and clicks (and the rest) per `bucket` of time: the chart of a campaign.
SELECT jsonb_agg(jsonb_build_object('at', b.at, 'sent', b.sent, 'delivered', b.delivered, 'opened', b.opened,
                                    'clicked', b.clicked, 'bounced', b.bounced, 'unsubscribed', b.unsubscribed)
                 ORDER BY b.at)
FROM (
    SELECT x.at, count(*) FILTER (WHERE x.kind = 'sent') AS sent,
           count(*) FILTER (WHERE x.kind = 'delivered') AS delivered,
           count(*) FILTER (WHERE x.kind = 'opened') AS opened,
           count(*) FILTER (WHERE x.kind = 'clicked') AS clicked,
           count(*) FILTER (WHERE x.kind = 'bounced') AS bounced,
           count(*) FILTER (WHERE x.kind = 'unsubscribed') AS unsubscribed
    FROM (
        SELECT date_bin(%(bucket)s, t.at, 'epoch') AS at, t.kind
        FROM message_outbox AS m,
             LATERAL (VALUES ('sent', m.sent_at), ('delivered', m.delivered_at), ('opened', m.opened_at),
                             ('clicked', m.clicked_at), ('bounced', m.bounced_at),
                             ('unsubscribed', m.unsubscribed_at)) AS t(kind, at)
        WHERE m.campaign_id = %(id)s AND t.at IS NOT NULL
    ) AS x GROUP BY x.at
) AS b
