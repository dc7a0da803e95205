-- Schedules: "at this time, or every interval, emit scheduled.<name> for this profile".

CREATE TABLE schedules (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id       uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    kind             text NOT NULL CHECK (kind IN ('user', 'organization')),
    user_id          uuid REFERENCES users (id) ON DELETE CASCADE,
    organization_id  uuid REFERENCES organizations (id) ON DELETE CASCADE,
    identifiers      jsonb NOT NULL,   -- how firings name the profile in the event pipeline (merges follow)
    name             text NOT NULL,
    data             jsonb NOT NULL DEFAULT '{}',
    anchor_at        timestamptz NOT NULL,  -- occurrences are anchor + n * interval (n >= 0)
    interval_text    text,                  -- canonical interval; NULL for a one-time schedule
    next_at          timestamptz,           -- the next firing; NULL once a one-time schedule has fired
    fired            bigint NOT NULL DEFAULT 0,
    last_fired_at    timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'user') = (user_id IS NOT NULL) AND (kind = 'organization') = (organization_id IS NOT NULL)),
    UNIQUE (user_id, name),
    UNIQUE (organization_id, name)
);
CREATE INDEX schedules_due ON schedules (next_at) WHERE next_at IS NOT NULL;
