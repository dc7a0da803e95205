-- Messaging: the outbox the senders work from, subscriptions, suppressions, tracking, campaigns, and each
-- project's sending rules (quiet hours, frequency caps).

-- A subscription group: what a user can opt out of (marketing), or not (transactional).
CREATE TABLE subscription_groups (
    id                  uuid PRIMARY KEY DEFAULT lunogram_new_id(),
    project_id          uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name                text NOT NULL,
    channel             text NOT NULL CHECK (channel IN ('email', 'sms', 'push', 'inbox', 'whatsapp', 'webhook')),
    kind                text NOT NULL DEFAULT 'marketing' CHECK (kind IN ('marketing', 'transactional')),
    default_subscribed  boolean NOT NULL DEFAULT true,  -- false: only users who opted in receive it
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, name)
);

-- A user's choice for a group (no row: the group's default).
CREATE TABLE subscriptions (
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    group_id    uuid NOT NULL REFERENCES subscription_groups (id) ON DELETE CASCADE,
    project_id  uuid NOT NULL,
    subscribed  boolean NOT NULL,
    source      text NOT NULL DEFAULT 'api',   -- api, unsubscribe_link, one_click, preferences, complaint
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, group_id)
);

-- Addresses that must not be sent to again: hard bounces, complaints, or an operator's choice.
CREATE TABLE suppressions (
    project_id  uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    channel     text NOT NULL,
    address     text NOT NULL,   -- lower-cased email address, phone number
    reason      text NOT NULL,   -- hard_bounce, complaint, manual
    message_id  uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, channel, address)
);

-- Each project's sending rules. Quiet hours (local to each user) defer marketing sends; frequency caps
-- skip marketing sends past `count` per `period` per channel and user.
CREATE TABLE messaging_settings (
    project_id       uuid PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
    quiet_start      time,          -- NULL: no quiet hours
    quiet_end        time,
    timezone         text NOT NULL DEFAULT 'UTC',  -- for users without one
    frequency_caps   jsonb NOT NULL DEFAULT '{}',  -- {channel: {count, period_seconds}}
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE campaigns (
    id                     uuid PRIMARY KEY DEFAULT lunogram_new_id(),
    project_id             uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name                   text NOT NULL,
    list_id                uuid NOT NULL REFERENCES lists (id) ON DELETE RESTRICT,
    template_id            uuid NOT NULL REFERENCES templates (id) ON DELETE RESTRICT,
    channel                text NOT NULL,
    provider_id            uuid,            -- NULL: the channel's default provider
    send_at                timestamptz,     -- NULL: not scheduled yet (a draft)
    local_time             boolean NOT NULL DEFAULT false,  -- send_at's wall-clock time in each recipient's timezone
    status                 text NOT NULL DEFAULT 'draft'
                           CHECK (status IN ('draft', 'scheduled', 'queuing', 'sending', 'paused', 'done', 'cancelled')),
    cursor                 uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000', -- last list member queued
    total                  bigint,          -- list members when queuing started
    queued                 bigint NOT NULL DEFAULT 0,
    data                   jsonb NOT NULL DEFAULT '{}',
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    started_at             timestamptz,
    finished_at            timestamptz
);
CREATE INDEX campaigns_project ON campaigns (project_id, created_at DESC, id DESC);
CREATE INDEX campaigns_due ON campaigns (send_at) WHERE status IN ('scheduled', 'queuing');

-- The outbox (0021) becomes the senders' queue: one row per message, its state and its life.
ALTER TABLE message_outbox
    ADD COLUMN provider_id        uuid,
    ADD COLUMN campaign_id        uuid REFERENCES campaigns (id) ON DELETE CASCADE,
    ADD COLUMN group_id           uuid,             -- the subscription group checked (the template's)
    ADD COLUMN marketing          boolean NOT NULL DEFAULT true,  -- quiet hours and caps apply
    ADD COLUMN send_key           text,             -- the transactional API's idempotency key
    ADD COLUMN to_address         text,             -- where it went
    ADD COLUMN locale             text,
    ADD COLUMN attempts           integer NOT NULL DEFAULT 0,
    ADD COLUMN next_attempt_at    timestamptz NOT NULL DEFAULT now(),  -- due (queued), or the lease's end (sending)
    ADD COLUMN reason             text,             -- why skipped, deferred or failed
    ADD COLUMN provider_message_id text,
    ADD COLUMN sent_at            timestamptz,
    ADD COLUMN delivered_at       timestamptz,
    ADD COLUMN opened_at          timestamptz,      -- first open
    ADD COLUMN clicked_at         timestamptz,      -- first click
    ADD COLUMN bounced_at         timestamptz,
    ADD COLUMN complained_at      timestamptz,
    ADD COLUMN unsubscribed_at    timestamptz,
    ADD COLUMN failed_at          timestamptz,
    ADD COLUMN deferrals          integer NOT NULL DEFAULT 0;
ALTER TABLE message_outbox DROP CONSTRAINT IF EXISTS message_outbox_status_check;
ALTER TABLE message_outbox ADD CONSTRAINT message_outbox_status_check
    CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'skipped', 'cancelled'));
CREATE INDEX message_outbox_due ON message_outbox (next_attempt_at) WHERE status IN ('queued', 'sending');
CREATE UNIQUE INDEX message_outbox_send_key ON message_outbox (project_id, send_key) WHERE send_key IS NOT NULL;
CREATE INDEX message_outbox_campaign ON message_outbox (campaign_id, status) WHERE campaign_id IS NOT NULL;
CREATE INDEX message_outbox_provider_message ON message_outbox (provider_id, provider_message_id)
    WHERE provider_message_id IS NOT NULL;
CREATE INDEX message_outbox_sent ON message_outbox (user_id, channel, sent_at) WHERE sent_at IS NOT NULL AND marketing;
CREATE INDEX message_outbox_journey ON message_outbox (journey_id, step) WHERE journey_id IS NOT NULL;

-- What happened to each message, in order: sent, delivered, opened, clicked, bounced, complained,
-- unsubscribed, failed, deferred, skipped.
CREATE TABLE message_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id  uuid NOT NULL REFERENCES message_outbox (id) ON DELETE CASCADE,
    project_id  uuid NOT NULL,
    kind        text NOT NULL,
    detail      jsonb,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX message_events_message ON message_events (message_id, id);

-- The key that signs the links in messages (unsubscribe, preferences, open and click tracking): one per
-- installation, made here, shared by every server process on the database.
CREATE TABLE link_signing_key (
    id   boolean PRIMARY KEY DEFAULT true CHECK (id),
    key  bytea NOT NULL
);
INSERT INTO link_signing_key (key)
VALUES (decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'));

CREATE FUNCTION lunogram_messages_queued() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_notify('lunogram_messages', '');
    RETURN NULL;
END
$fn$;
CREATE TRIGGER message_outbox_queued AFTER INSERT ON message_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION lunogram_messages_queued();

-- A paused campaign's queued messages wait here with their due time (held_at), out of the senders' way.
ALTER TABLE message_outbox ADD COLUMN held_at timestamptz;
