-- Events: the durable inbox, per-profile history, broadcast fan-out, worker partition leases.

-- Accepted events wait here until a worker applies them. One row per accepted event; a row leaves only in
-- the transaction that wrote its history, so a crash replays it and history's unique keys absorb repeats.
CREATE TABLE event_inbox (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id       uuid NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('user', 'organization')),
    partition        smallint NOT NULL,
    name             text NOT NULL,
    data             jsonb NOT NULL,
    identifiers      jsonb,          -- exactly one of identifiers / match
    match            jsonb,
    accepted_at      timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT '-infinity',
    last_error       text,
    dead_at          timestamptz,    -- parked after too many failures; visible to operators
    broadcast_cursor uuid            -- a match fan-out's progress: the last target id delivered
);
CREATE INDEX event_inbox_claim ON event_inbox (partition, id) WHERE dead_at IS NULL;
CREATE INDEX event_inbox_dead ON event_inbox (project_id, dead_at) WHERE dead_at IS NOT NULL;

CREATE TABLE worker_leases (
    partition   smallint PRIMARY KEY,
    owner       text,
    expires_at  timestamptz NOT NULL DEFAULT '-infinity'
);

CREATE TABLE user_events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id   uuid NOT NULL,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    inbox_id     bigint NOT NULL,   -- the accepted event it came from (one per target, exactly once)
    name         text NOT NULL,
    data         jsonb NOT NULL,
    via_organization_id uuid,       -- set when it reached the user as a member of an organization event
    accepted_at  timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (inbox_id, user_id)
);
CREATE INDEX user_events_user ON user_events (user_id, id DESC);

CREATE TABLE organization_events (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id       uuid NOT NULL,
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    inbox_id         bigint NOT NULL,
    name             text NOT NULL,
    data             jsonb NOT NULL,
    accepted_at      timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (inbox_id, organization_id)
);
CREATE INDEX organization_events_organization ON organization_events (organization_id, id DESC);

-- `match` broadcasts resolve targets with data @> match
CREATE INDEX users_data ON users USING gin (data jsonb_path_ops);
CREATE INDEX organizations_data ON organizations USING gin (data jsonb_path_ops);
