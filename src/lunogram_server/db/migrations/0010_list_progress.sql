-- How far a running recompute is: written from another connection while the recompute's own transaction
-- holds the list row (hence no foreign key, whose check would wait for that lock).
CREATE TABLE list_recompute_progress (
    list_id     uuid PRIMARY KEY,
    done        bigint NOT NULL,
    total       bigint NOT NULL,
    started_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
