-- Messaging providers: per project, the services each channel sends through (messaging/providers_service.py).
-- `config` holds the non-secret settings; `secrets` the secret ones as one AES-256-GCM sealed JSON object
-- (messaging/crypto.py), bound to the row's id; `secret_fields` names what is sealed, so listings need no key.
CREATE TABLE providers (
    id               uuid PRIMARY KEY,
    project_id       uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    channel          text NOT NULL CHECK (channel IN ('email', 'sms', 'push', 'webhook', 'whatsapp')),
    kind             text NOT NULL,
    name             text NOT NULL,
    config           jsonb NOT NULL DEFAULT '{}',
    secrets          bytea,
    secret_fields    text[] NOT NULL DEFAULT '{}',
    rate_per_second  double precision CHECK (rate_per_second > 0),  -- NULL: no limit (the senders keep it)
    is_default       boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((secrets IS NULL) = (secret_fields = '{}'))
);
CREATE UNIQUE INDEX providers_name ON providers (project_id, name);
CREATE UNIQUE INDEX providers_default ON providers (project_id, channel) WHERE is_default;
CREATE INDEX providers_project ON providers (project_id, channel, created_at, id);
