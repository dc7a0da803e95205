-- Idempotency-Key (optional header on Client API POSTs): the first answer to a key is kept for 24 hours,
-- stored in the same transaction as the write it answers, so a repeat (an SDK retrying after a dropped
-- response) gets that answer and stores nothing twice.
CREATE TABLE idempotency_keys (
    project_id    uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    key           text NOT NULL,
    request_hash  bytea NOT NULL,   -- sha256 of method, path and body: the same key with another request is a 409
    status        integer NOT NULL,
    body          bytea NOT NULL,
    content_type  text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
