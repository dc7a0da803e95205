-- Push devices and the in-app inbox (messaging/devices.py, messaging/inbox.py). Both hang on a profile:
-- deleted with it (the foreign keys), moved to the survivor when it is merged (the handlers in
-- messaging/sql/functions.sql, subscribed to lunogram_on_user_merged / lunogram_on_organization_merged).

-- A user's push targets, registered by POST /client/users/devices: an APNs (ios) or FCM (android) token, or
-- a Web Push subscription (web: endpoint and keys). One row per (user, device_id); at most
-- lunogram_max_devices_per_user() per user.
CREATE TABLE devices (
    id               uuid PRIMARY KEY DEFAULT lunogram_new_id(),
    project_id       uuid NOT NULL,
    user_id          uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_id        text NOT NULL,
    os               text NOT NULL CHECK (os IN ('web', 'ios', 'android')),
    os_version       text,
    model            text,
    app_version      text,
    data             jsonb NOT NULL DEFAULT '{}',
    token            text,
    endpoint         text,
    p256dh           text,
    auth             text,
    expiration_time  timestamptz,
    -- where a push goes: the token, or the Web Push endpoint
    address          text GENERATED ALWAYS AS (coalesce(token, endpoint)) STORED,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (CASE WHEN os = 'web' THEN token IS NULL AND endpoint IS NOT NULL AND p256dh IS NOT NULL AND auth IS NOT NULL
                ELSE token IS NOT NULL AND endpoint IS NULL END),
    UNIQUE (user_id, device_id)
);
-- A push address reaches one device of one user: registered again (another user signed in on the same
-- browser or phone), it moves there. Hashed: a token or endpoint may be longer than a btree entry allows.
CREATE UNIQUE INDEX devices_address ON devices (project_id, md5(address));

-- Messages of the in-app inbox, for a user or for an organization (its feed, read by the organization
-- routes). `identifier_*` is the message's own identifier (the caller's idempotency key; `outbox` and the
-- outbox message id for what the senders deliver); `source` is a free label the feeds filter on.
CREATE TABLE inbox_messages (
    id                      uuid PRIMARY KEY DEFAULT lunogram_new_id(),
    project_id              uuid NOT NULL,
    user_id                 uuid REFERENCES users (id) ON DELETE CASCADE,
    organization_id         uuid REFERENCES organizations (id) ON DELETE CASCADE,
    owner_id                uuid GENERATED ALWAYS AS (coalesce(user_id, organization_id)) STORED,
    owner_kind              text GENERATED ALWAYS AS (CASE WHEN user_id IS NOT NULL THEN 'user' ELSE 'organization' END) STORED,
    identifier_source       text NOT NULL,
    identifier_external_id  text NOT NULL,
    channel                 text NOT NULL CHECK (channel IN ('email', 'sms', 'push', 'inbox')),
    content                 jsonb NOT NULL DEFAULT '{}',
    data                    jsonb NOT NULL DEFAULT '{}',
    tags                    text[] NOT NULL DEFAULT '{}',
    priority                smallint NOT NULL DEFAULT 3 CHECK (priority BETWEEN 1 AND 5),
    source                  text,
    scheduled_at            timestamptz NOT NULL DEFAULT now(),  -- not shown before
    expires_at              timestamptz,                         -- not shown from
    read_at                 timestamptz,
    archived_at             timestamptz,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CHECK (num_nonnulls(user_id, organization_id) = 1)
);
-- posting the same identifier again for the same target and channel stores nothing new
CREATE UNIQUE INDEX inbox_messages_identifier
    ON inbox_messages (owner_id, channel, identifier_source, md5(identifier_external_id));
-- a feed: newest first (also how the cap per target and channel keeps the newest)
CREATE INDEX inbox_messages_feed ON inbox_messages (owner_id, channel, scheduled_at DESC, id DESC);
