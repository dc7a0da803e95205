-- Push devices (messaging/devices.py); the writes are functions (functions.sql). Scoped by project.

-- name: register_device
SELECT lunogram_register_device(%(project_id)s, %(identifiers)s, %(device)s);

-- name: forget_device
SELECT lunogram_forget_device(%(project_id)s, %(address)s);

-- name: devices_of
-- what the senders push to; Web Push subscriptions past their expiration_time are left out
SELECT user_id, os, token, endpoint, p256dh, auth FROM devices
WHERE project_id = %(project_id)s AND user_id = ANY (%(user_ids)s)
  AND (expiration_time IS NULL OR expiration_time > now())
ORDER BY user_id, updated_at DESC, id DESC;

-- name: vapid_public_key
-- the project's Web Push key: its default push provider if that is a webpush one, else its oldest webpush one
SELECT config ->> 'public_key' FROM providers
WHERE project_id = %(project_id)s AND kind = 'webpush' AND config ->> 'public_key' IS NOT NULL
ORDER BY is_default DESC, created_at, id
LIMIT 1;
