-- Keeping rule lists current without full recomputes: what each rule depends on, and users to re-evaluate.
ALTER TABLE lists
    ADD COLUMN uses_profile boolean NOT NULL DEFAULT false,          -- property or organization conditions
    ADD COLUMN referenced_lists uuid[] NOT NULL DEFAULT '{}';       -- list conditions
CREATE INDEX lists_profile ON lists (project_id) WHERE uses_profile;
CREATE INDEX lists_time ON lists (computed_at) WHERE uses_time;

-- Users whose profile changed (or whose re-evaluation had to wait for a recompute): the lists loop
-- re-evaluates every rule list of their project for them, then forgets them.
CREATE TABLE list_pending_users (
    user_id     uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    project_id  uuid NOT NULL,
    queued_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX list_pending_users_queued ON list_pending_users (queued_at);
