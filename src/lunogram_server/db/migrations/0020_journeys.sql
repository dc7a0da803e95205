-- Journeys: versioned graphs of steps that users enter and move through (journeys/).

CREATE TABLE journeys (
    id                 uuid PRIMARY KEY DEFAULT lunogram_new_id(),
    project_id         uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name               text NOT NULL,
    description        text NOT NULL DEFAULT '',
    status             text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'live', 'paused', 'archived')),
    live_version       integer,            -- the published version new entries go to
    latest_version     integer NOT NULL DEFAULT 1,
    timezone           text NOT NULL DEFAULT 'UTC',  -- for users without a timezone of their own
    reentry            text NOT NULL DEFAULT 'one_at_a_time'
                       CHECK (reentry IN ('once', 'one_at_a_time', 'always', 'cooldown')),
    cooldown_seconds   bigint,             -- reentry 'cooldown': at least this long between two entries
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX journeys_project ON journeys (project_id, created_at DESC, id DESC);

CREATE TABLE journey_versions (
    journey_id    uuid NOT NULL REFERENCES journeys (id) ON DELETE CASCADE,
    version       integer NOT NULL,
    graph         jsonb NOT NULL,
    published_at  timestamptz,          -- NULL: a draft (at most one: the latest version)
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (journey_id, version)
);

-- What the other domains' changes are matched against, one row per entrance, goal and wait of every
-- published version (entrances count only while `live`): the event worker looks up event names here.
CREATE TABLE journey_triggers (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id     uuid NOT NULL,
    journey_id     uuid NOT NULL REFERENCES journeys (id) ON DELETE CASCADE,
    version        integer NOT NULL,
    step           text NOT NULL,       -- the entrance, goal or wait step
    kind           text NOT NULL CHECK (kind IN ('event', 'organization_event', 'list', 'schedule', 'api',
                                                 'goal_event', 'goal_list', 'wait_event')),
    live           boolean NOT NULL DEFAULT false,
    next_step      text,                -- an entrance's first step
    event_name     text,
    list_id        uuid,
    list_change    text,
    schedule_kind  text,
    schedule_name  text,
    offset_seconds bigint,
    rule           jsonb,
    FOREIGN KEY (journey_id, version) REFERENCES journey_versions (journey_id, version) ON DELETE CASCADE
);
CREATE INDEX journey_triggers_event ON journey_triggers (project_id, event_name) WHERE event_name IS NOT NULL;
CREATE INDEX journey_triggers_list ON journey_triggers (list_id) WHERE list_id IS NOT NULL;
CREATE INDEX journey_triggers_schedule ON journey_triggers (project_id, schedule_name) WHERE schedule_name IS NOT NULL;
CREATE INDEX journey_triggers_version ON journey_triggers (journey_id, version);

-- One row per run: a user's way through one version of a journey. No foreign key to users: a run's record
-- outlives its user (a delete ends it as 'deleted').
CREATE TABLE journey_runs (
    id             uuid PRIMARY KEY DEFAULT lunogram_new_id(),
    project_id     uuid NOT NULL,
    journey_id     uuid NOT NULL REFERENCES journeys (id) ON DELETE CASCADE,
    version        integer NOT NULL,
    user_id        uuid NOT NULL,
    entrance       text NOT NULL,
    entry_key      text NOT NULL,       -- what made it enter: exactly one run per key and journey
    lane           uuid NOT NULL,       -- one active run per (journey, user, lane): a constant lane unless
                                        -- the journey allows concurrent runs (then the run's own id)
    status         text NOT NULL CHECK (status IN ('active', 'waiting', 'calling', 'completed', 'exited',
                                                    'converted', 'failed', 'merged', 'deleted', 'cancelled')),
    step           text NOT NULL,       -- the step it is at
    visit          integer NOT NULL DEFAULT 0,  -- steps taken: (run, visit) keys every side effect
    step_at        timestamptz NOT NULL DEFAULT now(),  -- when it reached its step
    due_at         timestamptz,         -- when the runner next looks at it; NULL: ended, or only an event moves it
    held_due_at    timestamptz,         -- while the journey is paused: the due_at to restore
    wait_event     text,                -- waiting for this event (a wait step)
    context        jsonb NOT NULL DEFAULT '{}',  -- {event, organization, data, visited, variants}
    error          text,
    attempts       integer NOT NULL DEFAULT 0,   -- of the current step's side effect (webhooks)
    entered_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    ended_at       timestamptz,
    UNIQUE (journey_id, entry_key),
    FOREIGN KEY (journey_id, version) REFERENCES journey_versions (journey_id, version) ON DELETE CASCADE
);
CREATE UNIQUE INDEX journey_runs_one_active ON journey_runs (journey_id, user_id, lane) WHERE ended_at IS NULL;
CREATE INDEX journey_runs_due ON journey_runs (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX journey_runs_user ON journey_runs (user_id) WHERE ended_at IS NULL;
CREATE INDEX journey_runs_user_all ON journey_runs (project_id, user_id, entered_at DESC);
CREATE INDEX journey_runs_step ON journey_runs (journey_id, version, step) WHERE ended_at IS NULL;
CREATE INDEX journey_runs_entered ON journey_runs (journey_id, user_id, entered_at DESC);

-- Every step a run took: when, and why (the outcome and its detail). (run, visit) is unique, so a replayed
-- step writes nothing twice.
CREATE TABLE journey_steps_taken (
    run_id      uuid NOT NULL REFERENCES journey_runs (id) ON DELETE CASCADE,
    visit       integer NOT NULL,
    journey_id  uuid NOT NULL,
    version     integer NOT NULL,
    step        text NOT NULL,
    outcome     text NOT NULL,
    detail      jsonb,
    at          timestamptz NOT NULL,
    PRIMARY KEY (run_id, visit)
);
CREATE INDEX journey_steps_taken_step ON journey_steps_taken (journey_id, version, step);

-- Schedule entrances waiting for their moment: one row per (entrance, schedule, occurrence).
CREATE TABLE journey_schedule_entries (
    trigger_id     bigint NOT NULL REFERENCES journey_triggers (id) ON DELETE CASCADE,
    schedule_id    uuid NOT NULL,
    project_id     uuid NOT NULL,
    occurrence_at  timestamptz NOT NULL,
    due_at         timestamptz NOT NULL,
    PRIMARY KEY (trigger_id, schedule_id, occurrence_at)
);
CREATE INDEX journey_schedule_entries_due ON journey_schedule_entries (due_at);
CREATE INDEX journey_schedule_entries_schedule ON journey_schedule_entries (schedule_id);

-- A list entrance that enters the list's current members on publish: walked in chunks by user id.
CREATE TABLE journey_backfills (
    trigger_id  bigint PRIMARY KEY REFERENCES journey_triggers (id) ON DELETE CASCADE,
    project_id  uuid NOT NULL,
    after_user  uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000',
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Rate-limit steps: entries let through per window.
CREATE TABLE journey_rate_windows (
    journey_id    uuid NOT NULL REFERENCES journeys (id) ON DELETE CASCADE,
    step          text NOT NULL,
    window_start  timestamptz NOT NULL,
    passed        integer NOT NULL DEFAULT 0,
    PRIMARY KEY (journey_id, step, window_start)
);
