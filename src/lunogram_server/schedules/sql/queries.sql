-- Schedules. Templates ({entity}, {entities}) are rendered for users and organizations
-- (events/queries.py: load_kind_queries).

-- name: resolve
-- The profile a schedule hangs on: resolved like an upsert (created if unknown, merged if several).
SELECT entity_id FROM lunogram_resolve_{entity}(%(project_id)s, %(identifiers)s, true)

-- name: upsert
-- `name` is unique per profile: upserting again replaces identifiers, data, anchor, interval, next firing.
INSERT INTO schedules AS s (project_id, kind, {entity}_id, identifiers, name, data, anchor_at, interval_text, next_at)
VALUES (%(project_id)s, '{entity}', %(target_id)s, %(identifiers)s, %(name)s, %(data)s, %(anchor_at)s,
        %(interval)s, %(next_at)s)
ON CONFLICT ({entity}_id, name) DO UPDATE
SET identifiers = excluded.identifiers, data = excluded.data, anchor_at = excluded.anchor_at,
    interval_text = excluded.interval_text, next_at = excluded.next_at, updated_at = now()
RETURNING id, name, next_at, data

-- name: to_delete
-- Every schedule of that name on the profiles the identifiers name (without creating anyone), locked: they
-- are announced as cancelled (announce_cancelled), then deleted.
SELECT id FROM schedules
WHERE project_id = %(project_id)s AND name = %(name)s
  AND {entity}_id IN (SELECT entity_id FROM lunogram_resolve_{entity}(%(project_id)s, %(identifiers)s, false))
ORDER BY id
FOR UPDATE

-- name: of_profile
-- The admin view: a profile's schedules, soonest first (fired one-time schedules last). NULL when the
-- profile is not in the project.
SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM {entities} WHERE id = %(target_id)s AND project_id = %(project_id)s)
            THEN NULL
            ELSE coalesce(jsonb_agg(jsonb_build_object(
                'id', s.id, 'name', s.name, 'data', s.data, 'anchor_at', s.anchor_at,
                'interval', s.interval_text, 'next_at', s.next_at, 'fired', s.fired,
                'last_fired_at', s.last_fired_at, 'created_at', s.created_at, 'updated_at', s.updated_at)
                ORDER BY s.next_at NULLS LAST, s.name) FILTER (WHERE s.id IS NOT NULL), '[]'::jsonb)::text
       END
FROM (SELECT * FROM schedules WHERE {entity}_id = %(target_id)s AND project_id = %(project_id)s) AS s

-- name: claim_due
-- Due schedules, oldest due first, locked so that any number of schedulers share them: each due instance
-- is claimed by one scheduler, and fired and advanced in that scheduler's transaction.
SELECT id, anchor_at, interval_text
FROM schedules
WHERE next_at <= %(now)s
ORDER BY next_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: fire
-- One `scheduled.<name>` event per claimed schedule into the event pipeline, named by the schedule's
-- identifiers (so a merge since then still finds the profile), with the schedule's data.
INSERT INTO event_inbox (project_id, kind, partition, name, data, identifiers)
SELECT s.project_id, s.kind,
       lunogram_event_partition(s.project_id, s.kind,
                                (s.identifiers -> 0 ->> 'source') || ':' || (s.identifiers -> 0 ->> 'external_id')),
       'scheduled.' || s.name, s.data, s.identifiers
FROM unnest(%(ids)s::uuid[]) WITH ORDINALITY AS f(id, ord)
JOIN schedules AS s ON s.id = f.id
ORDER BY f.ord

-- name: advance
-- The next firing of each fired schedule (NULL: a one-time schedule is done).
UPDATE schedules AS s
SET next_at = a.next_at, fired = s.fired + 1, last_fired_at = %(now)s, updated_at = now()
FROM unnest(%(ids)s::uuid[], %(next)s::timestamptz[]) AS a(id, next_at)
WHERE s.id = a.id
  AND s.id = ANY (%(ids)s::uuid[])  -- keeps the plan on the primary key (else, at ~100k rows, a seq scan)

-- name: announce_written
SELECT lunogram_on_schedules_written(%(project_id)s, %(ids)s::uuid[])

-- name: announce_cancelled
SELECT lunogram_on_schedules_cancelled(%(project_id)s, %(ids)s::uuid[])

-- name: delete
DELETE FROM schedules WHERE id = ANY (%(ids)s::uuid[])

-- name: announce_fired
SELECT lunogram_on_schedules_fired(%(ids)s::uuid[], %(now)s)

-- name: stats
SELECT count(*) FILTER (WHERE next_at IS NOT NULL) AS active,
       count(*) FILTER (WHERE next_at <= now()) AS due,
       coalesce(extract(epoch FROM now() - min(next_at) FILTER (WHERE next_at <= now())), 0)::float8 AS lag_seconds
FROM schedules
