-- The outbox and its senders (messaging/sender.py, messaging/outbox.py).

-- name: claim
-- Messages due: queued ones whose time came, and sending ones whose lease ran out (the process that sent
-- them died before recording the answer: they go again, under the same message id). Locked: any number
-- of senders share them.
SELECT id, project_id, user_id, channel, template_id, provider_id, group_id, marketing, data, run_id, journey_id,
       step, campaign_id, attempts, status
FROM message_outbox
WHERE next_attempt_at <= %(now)s AND status IN ('queued', 'sending')
ORDER BY next_attempt_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: people
SELECT u.id, u.project_id, u.email, u.phone, u.timezone, u.locale, u.data,
       coalesce((SELECT jsonb_agg(jsonb_build_object('source', i.source, 'external_id', i.external_id)
                                  ORDER BY i.created_at, i.id)
                 FROM user_identifiers AS i WHERE i.user_id = u.id), '[]'::jsonb)
FROM users AS u WHERE u.id = ANY (%(ids)s::uuid[])

-- name: groups
SELECT id, kind, default_subscribed FROM subscription_groups WHERE id = ANY (%(ids)s::uuid[])

-- name: choices
SELECT user_id, group_id, subscribed FROM subscriptions
WHERE (user_id, group_id) IN (SELECT * FROM unnest(%(users)s::uuid[], %(groups)s::uuid[]))

-- name: suppressed
SELECT project_id, channel, address FROM suppressions
WHERE (project_id, channel, address) IN (SELECT * FROM unnest(%(projects)s::uuid[], %(channels)s::text[],
                                                             %(addresses)s::text[]))

-- name: settings
SELECT project_id, quiet_start, quiet_end, timezone, frequency_caps FROM messaging_settings
WHERE project_id = ANY (%(ids)s::uuid[])

-- name: lock_capped
-- Deciding marketing sends of a channel with a frequency cap is one sender at a time per project and
-- channel (`keys`: 'project:channel', sorted, so two senders take them in the same order), until the
-- batch's transaction ends: two senders deciding at once would each count the other's sends as not made.
SELECT pg_advisory_xact_lock(hashtextextended('cap:' || k, 0)) FROM unnest(%(keys)s::text[]) AS k ORDER BY k

-- name: sent_recently
-- Marketing messages to these users on this channel sent since `since`, or on their way (marked `sending`
-- by another batch, not `ids`: this batch's own, claimed again after a lease ran out), for frequency caps.
SELECT user_id, count(*) FROM message_outbox
WHERE user_id = ANY (%(users)s::uuid[]) AND channel = %(channel)s AND marketing AND sent_at > %(since)s
GROUP BY user_id
UNION ALL
SELECT user_id, count(*) FROM message_outbox
WHERE user_id = ANY (%(users)s::uuid[]) AND channel = %(channel)s AND marketing AND status = 'sending'
  AND sent_at IS NULL AND id <> ALL (%(ids)s::uuid[])
GROUP BY user_id

-- name: mark_sending
-- Claimed messages about to be sent: `sending` under a lease until `next_attempt_at`. The batch comes as one
-- JSON document (`messages`: [{id, to_address, locale, group_id, marketing, provider_id}]), here and in the
-- other writes of the senders: psycopg's dumping of typed arrays cost more CPU than the sends themselves
-- (bench/sends.py, docs/performance.md).
UPDATE message_outbox AS m
SET status = 'sending', attempts = m.attempts + 1, next_attempt_at = %(lease)s, to_address = v.to_address,
    locale = v.locale, group_id = v.group_id, marketing = v.marketing, provider_id = v.provider_id,
    updated_at = %(now)s
FROM jsonb_to_recordset(%(messages)s) AS v(id uuid, to_address text, locale text, group_id uuid, marketing boolean,
                                           provider_id uuid)
WHERE m.id = v.id

-- name: settle
-- Messages that end without a send (skipped: unsubscribed, suppressed, over a cap, no address; failed:
-- no provider, a template that cannot render) or wait (deferred by quiet hours).
UPDATE message_outbox AS m
SET status = v.status, reason = v.reason, next_attempt_at = coalesce(v.next_at, m.next_attempt_at),
    deferrals = m.deferrals + (v.next_at IS NOT NULL)::int,
    failed_at = CASE WHEN v.status = 'failed' THEN %(now)s ELSE m.failed_at END, updated_at = %(now)s
FROM jsonb_to_recordset(%(messages)s) AS v(id uuid, status text, reason text, next_at timestamptz)
WHERE m.id = v.id

-- name: record
-- A provider's answers, each for the attempt it answers (`attempts` as marked): a late answer of an attempt
-- whose lease ran out, and that another sender made again, changes nothing. Returns what was recorded.
UPDATE message_outbox AS m
SET status = v.status,
    next_attempt_at = coalesce(v.next_at, m.next_attempt_at),
    provider_message_id = coalesce(v.provider_message_id, m.provider_message_id),
    reason = v.reason,
    sent_at = CASE WHEN v.status = 'sent' THEN coalesce(m.sent_at, %(now)s) ELSE m.sent_at END,
    failed_at = CASE WHEN v.status = 'failed' THEN %(now)s ELSE m.failed_at END,
    bounced_at = CASE WHEN v.bounced THEN coalesce(m.bounced_at, %(now)s) ELSE m.bounced_at END,
    updated_at = %(now)s
FROM jsonb_to_recordset(%(answers)s) AS v(id uuid, attempts integer, status text, next_at timestamptz,
                                          provider_message_id text, reason text, bounced boolean)
WHERE m.id = v.id AND m.status = 'sending' AND m.attempts = v.attempts
RETURNING m.id

-- name: log_events
-- `events`: [{message_id, project_id, kind, detail}], all at `at`.
INSERT INTO message_events (message_id, project_id, kind, detail, at)
SELECT message_id, project_id, kind, detail, %(at)s
FROM jsonb_to_recordset(%(events)s) AS e(message_id uuid, project_id uuid, kind text, detail jsonb)

-- name: emit
-- `message.<kind>` user events into the event pipeline, so journeys and lists react (a wait for
-- message.opened, a list of users who clicked). Named by the user's identifiers, as ingest does.
-- `events`: [{id, kind, data}]; each event's data is what the message was about (its id, channel, template,
-- journey, step, campaign, run) with the event's own `data` over it.
WITH targets AS (
    SELECT m.project_id, e.kind,
           jsonb_build_object('message_id', m.id::text, 'channel', m.channel, 'template_id', m.template_id,
                              'journey_id', m.journey_id, 'step', m.step, 'campaign_id', m.campaign_id,
                              'run_id', m.run_id) || e.data AS data,
           (SELECT jsonb_agg(jsonb_build_object('source', i.source, 'external_id', i.external_id)
                             ORDER BY i.created_at, i.id)
            FROM user_identifiers AS i WHERE i.user_id = m.user_id) AS identifiers,
           e.n
    FROM ROWS FROM (jsonb_to_recordset(%(events)s) AS (id uuid, kind text, data jsonb)) WITH ORDINALITY
         AS e(id, kind, data, n)
    JOIN message_outbox AS m ON m.id = e.id
)
INSERT INTO event_inbox (project_id, kind, partition, name, data, identifiers)
SELECT project_id, 'user',
       lunogram_event_partition(project_id, 'user',
                                (identifiers -> 0 ->> 'source') || ':' || (identifiers -> 0 ->> 'external_id')),
       'message.' || kind, data, identifiers
FROM targets WHERE identifiers IS NOT NULL
ORDER BY n

-- name: suppress
INSERT INTO suppressions (project_id, channel, address, reason, message_id)
SELECT * FROM unnest(%(projects)s::uuid[], %(channels)s::text[], %(addresses)s::text[], %(reasons)s::text[],
                     %(ids)s::uuid[])
ON CONFLICT DO NOTHING

-- name: queue_one
-- The transactional API: one message now, once per send key.
INSERT INTO message_outbox (project_id, user_id, channel, template_id, provider_id, data, marketing, send_key)
VALUES (%(project_id)s, %(user_id)s, %(channel)s, %(template_id)s, %(provider_id)s, %(data)s, false, %(send_key)s)
ON CONFLICT (project_id, send_key) WHERE send_key IS NOT NULL DO NOTHING
RETURNING id

-- name: by_key
SELECT id FROM message_outbox WHERE project_id = %(project_id)s AND send_key = %(send_key)s

-- name: message
SELECT jsonb_build_object(
    'id', m.id, 'user_id', m.user_id, 'channel', m.channel, 'template_id', m.template_id, 'status', m.status,
    'reason', m.reason, 'to', m.to_address, 'locale', m.locale, 'attempts', m.attempts,
    'provider_id', m.provider_id, 'provider_message_id', m.provider_message_id, 'journey_id', m.journey_id,
    'step', m.step, 'run_id', m.run_id, 'campaign_id', m.campaign_id, 'created_at', m.created_at,
    'next_attempt_at', CASE WHEN m.status = 'queued' THEN m.next_attempt_at END,
    'sent_at', m.sent_at, 'delivered_at', m.delivered_at, 'opened_at', m.opened_at, 'clicked_at', m.clicked_at,
    'bounced_at', m.bounced_at, 'complained_at', m.complained_at, 'unsubscribed_at', m.unsubscribed_at,
    'failed_at', m.failed_at,
    'events', coalesce((SELECT jsonb_agg(jsonb_build_object('kind', e.kind, 'detail', e.detail, 'at', e.at)
                                         ORDER BY e.id)
                        FROM message_events AS e WHERE e.message_id = m.id), '[]'::jsonb))
FROM message_outbox AS m WHERE m.id = %(id)s AND m.project_id = %(project_id)s

-- name: messages_of_user
SELECT jsonb_build_object('id', m.id, 'channel', m.channel, 'template_id', m.template_id, 'status', m.status,
                          'reason', m.reason, 'journey_id', m.journey_id, 'campaign_id', m.campaign_id,
                          'created_at', m.created_at, 'sent_at', m.sent_at, 'opened_at', m.opened_at,
                          'clicked_at', m.clicked_at)
FROM message_outbox AS m WHERE m.project_id = %(project_id)s AND m.user_id = %(user_id)s
ORDER BY m.created_at DESC, m.id DESC LIMIT %(limit)s

-- name: default_group
-- The group a marketing message without one counts under: one per project and channel, so that its
-- unsubscribe link means something and later sends respect it. Read without a lock: an upsert that
-- touched the row (DO UPDATE) locked it until the sender's transaction ended, and the senders' batches,
-- each holding its transaction through its render, took turns on that one row (bench/sends.py).
SELECT id FROM subscription_groups WHERE project_id = %(project_id)s AND name = %(channel)s || ' (default)'

-- name: make_default_group
-- Made when first needed; a sender that made it at the same moment leaves it to the other (read again).
INSERT INTO subscription_groups (project_id, name, channel, kind)
VALUES (%(project_id)s, %(channel)s || ' (default)', %(channel)s, 'marketing')
ON CONFLICT (project_id, name) DO NOTHING
RETURNING id

-- name: delivered_in_place
-- Inbox messages: stored in the user's inbox by the sender itself, so sent at once.
UPDATE message_outbox SET status = 'sent', sent_at = %(now)s, delivered_at = %(now)s, attempts = attempts + 1,
    updated_at = %(now)s
WHERE id = ANY (%(ids)s::uuid[])
