-- Projects, API keys, users, organizations, identifiers, memberships and merges.

CREATE TABLE projects (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id  uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('public', 'secret')),
    key_hash    bytea NOT NULL UNIQUE,          -- sha256 of the whole key; the key itself is never stored
    key_prefix  text NOT NULL,                  -- first characters, to tell keys apart in listings
    name        text NOT NULL DEFAULT '',
    allow       text[] NOT NULL DEFAULT '{}',   -- extra permissions granted to a public key
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_project ON api_keys (project_id);

CREATE TABLE users (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id       uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    email            text,
    phone            text,
    timezone         text,
    locale           text,
    data             jsonb NOT NULL DEFAULT '{}',
    has_push_device  boolean NOT NULL DEFAULT false,
    version          integer NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX users_project ON users (project_id, id);

CREATE TABLE user_identifiers (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id   uuid NOT NULL,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    source       text NOT NULL,
    external_id  text NOT NULL,
    metadata     jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, source, external_id)
);
CREATE INDEX user_identifiers_user ON user_identifiers (user_id);

CREATE TABLE organizations (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id  uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name        text,
    data        jsonb NOT NULL DEFAULT '{}',
    version     integer NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX organizations_project ON organizations (project_id, id);

CREATE TABLE organization_identifiers (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id       uuid NOT NULL,
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    source           text NOT NULL,
    external_id      text NOT NULL,
    metadata         jsonb NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, source, external_id)
);
CREATE INDEX organization_identifiers_organization ON organization_identifiers (organization_id);

CREATE TABLE organization_members (
    project_id       uuid NOT NULL,
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id          uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    data             jsonb NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX organization_members_user ON organization_members (user_id);

-- Every merge is recorded: which profile was folded into which, with what it carried.
CREATE TABLE user_merges (
    id           bigserial PRIMARY KEY,
    project_id   uuid NOT NULL,
    survivor_id  uuid NOT NULL,
    merged_id    uuid NOT NULL,
    identifiers  jsonb NOT NULL,
    data         jsonb NOT NULL,
    merged_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX user_merges_survivor ON user_merges (survivor_id);
CREATE INDEX user_merges_merged ON user_merges (merged_id);

CREATE TABLE organization_merges (
    id           bigserial PRIMARY KEY,
    project_id   uuid NOT NULL,
    survivor_id  uuid NOT NULL,
    merged_id    uuid NOT NULL,
    identifiers  jsonb NOT NULL,
    data         jsonb NOT NULL,
    merged_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX organization_merges_survivor ON organization_merges (survivor_id);
