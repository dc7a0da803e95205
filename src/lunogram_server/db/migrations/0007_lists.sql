-- Lists: static (members added by hand or import) and rule-based (members are the users the rule matches).
CREATE TABLE lists (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id        uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name              text NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('static', 'rule')),
    rule              jsonb,
    event_names       text[] NOT NULL DEFAULT '{}',   -- events that can change membership (incremental)
    uses_time         boolean NOT NULL DEFAULT false,  -- time windows: re-evaluated as time passes
    rule_version      integer NOT NULL DEFAULT 1,      -- bumped by each rule change
    computed_version  integer NOT NULL DEFAULT 0,      -- the rule_version the members reflect
    computed_at       timestamptz,
    error             text,                            -- why the last recompute of this rule failed
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'rule') = (rule IS NOT NULL))
);
CREATE INDEX lists_project ON lists (project_id, created_at DESC, id DESC);
CREATE INDEX lists_stale ON lists (updated_at) WHERE computed_version < rule_version;

CREATE TABLE list_members (
    list_id     uuid NOT NULL REFERENCES lists (id) ON DELETE CASCADE,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    project_id  uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (list_id, user_id)
);
CREATE INDEX list_members_user ON list_members (user_id);
CREATE INDEX list_members_newest ON list_members (list_id, created_at DESC, user_id DESC);

-- Every entry and exit, for journeys and audits. No foreign key to users: the record outlives them.
CREATE TABLE list_changes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id  uuid NOT NULL,
    list_id     uuid NOT NULL REFERENCES lists (id) ON DELETE CASCADE,
    user_id     uuid NOT NULL,
    change      text NOT NULL CHECK (change IN ('entered', 'exited')),
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX list_changes_list ON list_changes (list_id, id);
