-- The web console: its users and their roles per project, sessions, one-time links, login failures;
-- event figures the console shows (kept by an event subscriber); indexes for searching profiles.

-- People who sign in to the console (one set per installation). `superuser`: the first owner and whoever
-- they make so: owner of every project, may create projects.
CREATE TABLE console_users (
    id             uuid PRIMARY KEY DEFAULT lunogram_new_id(),
    email          text NOT NULL,                -- lower-cased; what one signs in with
    name           text NOT NULL DEFAULT '',
    password_hash  text,                         -- argon2id (PHC string); NULL until a one-time link sets it
    superuser      boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    disabled_at    timestamptz
);
CREATE UNIQUE INDEX console_users_email ON console_users (email);

CREATE TABLE console_roles (
    user_id     uuid NOT NULL REFERENCES console_users (id) ON DELETE CASCADE,
    project_id  uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    role        text NOT NULL CHECK (role IN ('owner', 'admin', 'editor', 'viewer')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, project_id)
);
CREATE INDEX console_roles_project ON console_roles (project_id);

-- A signed-in browser. The cookie holds a random token; only its SHA-256 is stored. Logging out, a
-- password reset or disabling the user revokes rows here, which every server sees at the next request.
CREATE TABLE console_sessions (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    token_hash    bytea NOT NULL UNIQUE,
    user_id       uuid NOT NULL REFERENCES console_users (id) ON DELETE CASCADE,
    project_id    uuid REFERENCES projects (id) ON DELETE SET NULL,  -- the project the console shows
    csrf_token    text NOT NULL,
    address       text NOT NULL DEFAULT '',
    user_agent    text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,          -- absolute end; idleness ends it sooner (last_seen_at)
    revoked_at    timestamptz
);
CREATE INDEX console_sessions_user ON console_sessions (user_id) WHERE revoked_at IS NULL;
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);

-- One-time links: the first owner's setup, an invitation, a password reset. SHA-256 of the token only.
CREATE TABLE console_tokens (
    token_hash  bytea PRIMARY KEY,
    purpose     text NOT NULL CHECK (purpose IN ('setup', 'invite', 'reset')),
    user_id     uuid REFERENCES console_users (id) ON DELETE CASCADE,  -- NULL for setup
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    CHECK ((purpose = 'setup') = (user_id IS NULL))
);
CREATE INDEX console_tokens_expires ON console_tokens (expires_at);

-- Failed sign-ins, by subject (`address:<ip>` or `account:<email>`), for the login rate limit.
CREATE TABLE console_login_failures (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject  text NOT NULL,
    at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX console_login_failures_subject ON console_login_failures (subject, at);

-- Per project and event name: how many history rows, when first and last seen, the latest payload.
-- `shard` (the worker connection's backend pid mod 64) keeps concurrent workers off each other's rows:
-- a worker updates only its own shard's row inside its batch's transaction, so two batches never wait on
-- one row lock; readers sum the shards.
CREATE TABLE event_name_stats (
    project_id     uuid NOT NULL,
    kind           text NOT NULL,
    name           text NOT NULL,
    shard          smallint NOT NULL,
    count          bigint NOT NULL DEFAULT 0,
    first_seen_at  timestamptz NOT NULL,
    last_seen_at   timestamptz NOT NULL,
    sample         jsonb,                     -- the data of the latest event (NULL when over 4 KiB)
    PRIMARY KEY (project_id, kind, name, shard)
);

-- Per project and minute: events accepted in that minute (counted once applied) and events applied in it.
CREATE TABLE event_minute_stats (
    project_id  uuid NOT NULL,
    minute      timestamptz NOT NULL,
    shard       smallint NOT NULL,
    accepted    bigint NOT NULL DEFAULT 0,
    processed   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, minute, shard)
);
CREATE INDEX event_minute_stats_minute ON event_minute_stats (minute);

-- Search: identifier and e-mail prefixes (text_pattern_ops: byte-wise ranges that a generic plan can use
-- whatever the database's collation), organization names. Data search uses users_data (GIN, `@>`).
CREATE INDEX user_identifiers_prefix ON user_identifiers (project_id, external_id text_pattern_ops);
CREATE INDEX users_email_prefix ON users (project_id, lower(email) text_pattern_ops) WHERE email IS NOT NULL;
CREATE INDEX organization_identifiers_prefix ON organization_identifiers (project_id, external_id text_pattern_ops);
CREATE INDEX organizations_name_prefix ON organizations (project_id, lower(name) text_pattern_ops)
    WHERE name IS NOT NULL;

-- The overview's sends per minute: message events are appended in time order, so a BRIN index on `at`
-- finds the last hour's pages at almost no cost to writers.
CREATE INDEX message_events_at ON message_events USING brin (at);
