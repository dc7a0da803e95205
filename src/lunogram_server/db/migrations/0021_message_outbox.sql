-- Messages to send, written in the transaction that decided them (a journey's send step; later the
-- transactional send API and campaigns). The sender loops of messaging/ take them from here.
CREATE TABLE message_outbox (
    id           uuid PRIMARY KEY DEFAULT lunogram_new_id(),
    project_id   uuid NOT NULL,
    user_id      uuid NOT NULL,
    channel      text NOT NULL,
    template_id  uuid,
    run_id       uuid,
    visit        integer,
    journey_id   uuid,
    step         text,
    data         jsonb NOT NULL DEFAULT '{}',
    status       text NOT NULL DEFAULT 'queued',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (run_id, visit)
);
CREATE INDEX message_outbox_user ON message_outbox (project_id, user_id, created_at DESC);
