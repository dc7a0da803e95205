-- What recipients do with messages: opens, clicks, unsubscribes (messaging/tracking.py), and what providers
-- report back: deliveries, bounces, complaints (messaging/feedback.py).

-- name: opened
-- The first open sets opened_at; returns whether this was it (only the first is a message.opened event).
UPDATE message_outbox SET opened_at = %(at)s, updated_at = %(at)s
WHERE id = %(id)s AND opened_at IS NULL
RETURNING project_id

-- name: clicked
-- Every click is recorded; the first sets clicked_at (and opened_at: a click means it was opened).
UPDATE message_outbox SET clicked_at = coalesce(clicked_at, %(at)s), opened_at = coalesce(opened_at, %(at)s),
    updated_at = %(at)s
WHERE id = %(id)s
RETURNING project_id, (clicked_at = %(at)s) AS first

-- name: unsubscribed
UPDATE message_outbox SET unsubscribed_at = coalesce(unsubscribed_at, %(at)s), updated_at = %(at)s
WHERE id = %(id)s AND project_id = %(project_id)s
RETURNING group_id

-- name: by_provider_message
SELECT id, project_id, channel, to_address FROM message_outbox
WHERE provider_id = %(provider_id)s AND provider_message_id = %(provider_message_id)s

-- name: by_id_of_provider
SELECT id, project_id, channel, to_address FROM message_outbox
WHERE provider_id = %(provider_id)s AND id = %(id)s

-- name: delivered
UPDATE message_outbox SET delivered_at = coalesce(delivered_at, %(at)s), updated_at = %(at)s
WHERE id = %(id)s AND delivered_at IS NULL
RETURNING id

-- name: bounced
UPDATE message_outbox SET bounced_at = coalesce(bounced_at, %(at)s), updated_at = %(at)s
WHERE id = %(id)s AND bounced_at IS NULL
RETURNING id

-- name: complained
UPDATE message_outbox SET complained_at = coalesce(complained_at, %(at)s), updated_at = %(at)s
WHERE id = %(id)s AND complained_at IS NULL
RETURNING id

-- name: provider_of
SELECT id, project_id, kind, config FROM providers WHERE id = %(id)s

-- name: complaint_leaves_group
-- A complaint (the recipient marked it spam): they leave the message's group, as if they had unsubscribed.
INSERT INTO subscriptions (user_id, group_id, project_id, subscribed, source)
SELECT m.user_id, m.group_id, m.project_id, false, 'complaint'
FROM message_outbox AS m JOIN subscription_groups AS g ON g.id = m.group_id AND g.kind = 'marketing'
WHERE m.id = %(id)s
ON CONFLICT (user_id, group_id) DO UPDATE SET subscribed = false, source = 'complaint', updated_at = now()
