-- Events: the durable inbox, per-profile history, and what workers need to share the work.

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
    broadcast_cursor uuid,           -- a match fan-out's progress: the last target id delivered
    CHECK ((identifiers IS NULL) <> (match IS NULL))
);
CREATE INDEX event_inbox_claim ON event_inbox (partition, id) WHERE dead_at IS NULL;
CREATE INDEX event_inbox_dead ON event_inbox (project_id, id) WHERE dead_at IS NOT NULL;

-- Events of one identifier hash to one partition; a worker holds a partition's row lock for the whole
-- transaction that applies its events, so one partition's events are applied by one worker at a time, in
-- order, and a crashed worker's partitions are free again the moment its connection drops.
CREATE TABLE event_partitions (
    partition smallint PRIMARY KEY
);
INSERT INTO event_partitions SELECT generate_series(0, 63);

-- What each worker task has done, updated in the same transaction as the work: counters that survive
-- restarts and add up across processes (the /metrics totals are sums over these rows).
CREATE TABLE event_worker_stats (
    worker      text PRIMARY KEY,
    processed   bigint NOT NULL DEFAULT 0,
    delivered   bigint NOT NULL DEFAULT 0,
    failed      bigint NOT NULL DEFAULT 0,
    dead        bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE user_events (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id           uuid NOT NULL,
    user_id              uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    inbox_id             bigint NOT NULL,   -- the accepted event it came from: one per target, exactly once
    name                 text NOT NULL,
    data                 jsonb NOT NULL,
    accepted_at          timestamptz NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
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

-- `match` broadcasts find their targets with data @> match
CREATE INDEX users_data ON users USING gin (data jsonb_path_ops);
CREATE INDEX organizations_data ON organizations USING gin (data jsonb_path_ops);
