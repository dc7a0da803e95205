-- Event pipeline queries. Queries that differ only by kind of profile are templates: {entity} (user,
-- organization), {entities} (the table), {identifiers} (its identifier table) and {history} (its event
-- table); events/queries.py renders them for both kinds.

-- name: enqueue
-- The whole accepted batch in one statement (one round trip, one commit). Events of one identifier share a
-- partition (its first identifier's hash), which is what keeps them in order; a broadcast hashes its match.
INSERT INTO event_inbox (project_id, kind, partition, name, data, identifiers, match)
SELECT %(project_id)s, %(kind)s,
       lunogram_event_partition(%(project_id)s, %(kind)s,
           CASE WHEN e ? 'identifier'
                THEN (e -> 'identifier' -> 0 ->> 'source') || ':' || (e -> 'identifier' -> 0 ->> 'external_id')
                ELSE 'match:' || (e ->> 'match') END),
       e ->> 'name', e -> 'data', e -> 'identifier', e -> 'match'
FROM jsonb_array_elements(%(events)s::jsonb) WITH ORDINALITY AS t(e, ord)
ORDER BY ord

-- name: claim_partitions
-- Lock up to %(partitions)s partitions that have due events, skipping those other workers hold. The locks
-- last until this transaction ends: commit, rollback or a dropped connection. %(only)s (or NULL) limits the
-- claim to given partitions: the retry of a failed batch, one event at a time.
SELECT p.partition FROM event_partitions AS p
WHERE (%(only)s::smallint[] IS NULL OR p.partition = ANY (%(only)s::smallint[]))
  AND EXISTS (SELECT 1 FROM event_inbox AS i
              WHERE i.partition = p.partition AND i.dead_at IS NULL AND i.next_attempt_at <= now())
ORDER BY random()
LIMIT %(partitions)s
FOR UPDATE SKIP LOCKED

-- name: claim_events
-- The claimed partitions' oldest due events. A statement of its own, after the lock: its snapshot then
-- includes the commit of the worker that held a partition before us, so rows it applied are gone (one
-- statement would read the inbox as it was before it waited, and apply them again).
SELECT i.id, i.partition, i.project_id, i.kind, i.name, i.data, i.identifiers, i.match, i.accepted_at,
       i.attempts, i.broadcast_cursor
FROM event_inbox AS i
WHERE i.partition = ANY (%(partitions)s::smallint[])
  AND i.dead_at IS NULL AND i.next_attempt_at <= now()
ORDER BY i.id
LIMIT %(limit)s

-- name: lookup
-- Fast path of resolution: identifiers that already name a profile. The profile rows are locked (KEY
-- SHARE) so that a merge or delete cannot remove one before this transaction writes its history; a
-- profile merged away meanwhile is simply not returned, and its events take the slow path.
SELECT t.project_id, t.source, t.external_id, y.{entity}_id
FROM unnest(%(projects)s::uuid[], %(sources)s::text[], %(external_ids)s::text[]) AS t(project_id, source, external_id)
JOIN {identifiers} AS y ON y.project_id = t.project_id AND y.source = t.source AND y.external_id = t.external_id
JOIN {entities} AS e ON e.id = y.{entity}_id
FOR KEY SHARE OF e

-- name: resolve
-- Slow path: full resolution (create, attach identifiers, merge) for each identifier list, in order.
SELECT t.ord, r.entity_id
FROM unnest(%(projects)s::uuid[], %(identifiers)s::jsonb[]) WITH ORDINALITY AS t(project_id, ids, ord),
     LATERAL lunogram_resolve_{entity}(t.project_id, t.ids, true) AS r
ORDER BY t.ord

-- name: survivors
-- Where profiles merged away (in this batch, by a later resolution) went: original -> survivor, following
-- chains of merges. Only ids that no longer exist appear.
WITH RECURSIVE chain (original, current) AS (
    SELECT id, id FROM unnest(%(ids)s::uuid[]) AS t(id)
    WHERE NOT EXISTS (SELECT 1 FROM {entities} AS e WHERE e.id = t.id)
    UNION ALL
    SELECT c.original, m.survivor_id FROM chain AS c JOIN {entity}_merges AS m ON m.merged_id = c.current
)
SELECT c.original, c.current FROM chain AS c
WHERE EXISTS (SELECT 1 FROM {entities} AS e WHERE e.id = c.current)

-- name: write_history
-- History rows for resolved events, copied from the inbox (no JSON travels back from Python), in accepted
-- order so a profile's history ids follow acceptance. A replay after a crash writes nothing twice.
INSERT INTO {history} (project_id, {entity}_id, inbox_id, name, data, accepted_at)
SELECT i.project_id, t.target_id, i.id, i.name, i.data, i.accepted_at
FROM unnest(%(inbox_ids)s::bigint[], %(target_ids)s::uuid[]) AS t(inbox_id, target_id)
JOIN event_inbox AS i ON i.id = t.inbox_id
ORDER BY i.id
ON CONFLICT (inbox_id, {entity}_id) DO NOTHING
RETURNING inbox_id

-- name: broadcast_chunk
-- One bounded step of a match fan-out: the next targets after the cursor (in id order), each given the
-- event once (the unique key makes a replayed step a no-op). Returns where the step ended, how many
-- targets it found, and the targets it delivered to now.
WITH targets AS (
    SELECT e.id FROM {entities} AS e
    WHERE e.project_id = %(project_id)s AND e.data @> %(match)s AND e.id > %(after)s
    ORDER BY e.id
    LIMIT %(limit)s
), written AS (
    INSERT INTO {history} (project_id, {entity}_id, inbox_id, name, data, accepted_at)
    SELECT i.project_id, t.id, i.id, i.name, i.data, i.accepted_at
    FROM targets AS t CROSS JOIN event_inbox AS i
    WHERE i.id = %(inbox_id)s
    ORDER BY t.id
    ON CONFLICT (inbox_id, {entity}_id) DO NOTHING
    RETURNING {entity}_id AS id
)
SELECT (SELECT t.id FROM targets AS t ORDER BY t.id DESC LIMIT 1) AS last_id,
       (SELECT count(*) FROM targets) AS found,
       ARRAY(SELECT w.id FROM written AS w) AS delivered

-- name: advance_broadcast
UPDATE event_inbox SET broadcast_cursor = %(cursor)s WHERE id = %(id)s

-- name: members
-- The member users of organizations, for subscribers of organization events.
SELECT m.organization_id, array_agg(m.user_id ORDER BY m.user_id)
FROM organization_members AS m
WHERE m.organization_id = ANY (%(organization_ids)s::uuid[])
GROUP BY m.organization_id

-- name: done
DELETE FROM event_inbox WHERE id = ANY (%(ids)s::bigint[])

-- name: fail
-- A failed attempt: retry later with jittered exponential backoff, or park it (dead letter) after the last
-- allowed attempt. Returns whether it is now dead.
UPDATE event_inbox
SET attempts = attempts + 1,
    last_error = left(%(error)s, 2000),
    next_attempt_at = now() + make_interval(secs => least(%(max_delay)s,
                                                          %(base_delay)s * power(2, attempts) * (0.5 + random()))),
    dead_at = CASE WHEN attempts + 1 >= %(max_attempts)s THEN now() END
WHERE id = %(id)s
RETURNING dead_at IS NOT NULL

-- name: record_stats
INSERT INTO event_worker_stats AS s (worker, processed, delivered, failed, dead)
VALUES (%(worker)s, %(processed)s, %(delivered)s, %(failed)s, %(dead)s)
ON CONFLICT (worker) DO UPDATE
SET processed = s.processed + excluded.processed, delivered = s.delivered + excluded.delivered,
    failed = s.failed + excluded.failed, dead = s.dead + excluded.dead, updated_at = now()

-- name: queue_stats
-- Depth and lag over the whole inbox (every project): what /metrics and `lunogram status` show.
SELECT count(*) FILTER (WHERE dead_at IS NULL) AS depth,
       count(*) FILTER (WHERE dead_at IS NULL AND attempts > 0) AS retrying,
       count(*) FILTER (WHERE dead_at IS NOT NULL) AS dead,
       coalesce(extract(epoch FROM now() - min(accepted_at) FILTER (WHERE dead_at IS NULL)), 0)::float8
           AS lag_seconds,
       coalesce(pg_sequence_last_value('event_inbox_id_seq'), 0) AS accepted,
       (SELECT coalesce(sum(processed), 0) FROM event_worker_stats) AS processed,
       (SELECT coalesce(sum(delivered), 0) FROM event_worker_stats) AS delivered,
       (SELECT coalesce(sum(failed), 0) FROM event_worker_stats) AS failed
FROM event_inbox

-- name: history_page
-- A profile's events, newest first, as `{events, next_before}`: pass `next_before` as `before` for the next
-- page (null: no more). NULL when the profile is not in the project.
SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM {entities} WHERE id = %(target_id)s AND project_id = %(project_id)s)
            THEN NULL
            ELSE jsonb_build_object(
                'events', coalesce(jsonb_agg(jsonb_build_object(
                    'id', h.id, 'name', h.name, 'data', h.data, 'accepted_at', h.accepted_at,
                    'created_at', h.created_at) ORDER BY h.id DESC) FILTER (WHERE h.id IS NOT NULL), '[]'::jsonb),
                'next_before', CASE WHEN count(h.id) = %(limit)s THEN min(h.id) END)::text
       END
FROM (
    SELECT * FROM {history}
    WHERE {entity}_id = %(target_id)s AND project_id = %(project_id)s
      AND (%(before)s::bigint IS NULL OR id < %(before)s::bigint)
    ORDER BY id DESC
    LIMIT %(limit)s
) AS h

-- name: dead_page
-- Parked events of a project, newest first, paged like history_page.
SELECT jsonb_build_object(
           'events', coalesce(jsonb_agg(jsonb_build_object(
               'id', d.id, 'kind', d.kind, 'name', d.name, 'data', d.data, 'identifier', d.identifiers,
               'match', d.match, 'accepted_at', d.accepted_at, 'attempts', d.attempts,
               'last_error', d.last_error, 'dead_at', d.dead_at) ORDER BY d.id DESC), '[]'::jsonb),
           'next_before', CASE WHEN count(*) = %(limit)s THEN min(d.id) END)::text
FROM (
    SELECT * FROM event_inbox
    WHERE project_id = %(project_id)s AND dead_at IS NOT NULL
      AND (%(before)s::bigint IS NULL OR id < %(before)s::bigint)
    ORDER BY id DESC
    LIMIT %(limit)s
) AS d

-- name: retry_dead
-- An operator's retry: the parked event is due again, with a fresh set of attempts.
UPDATE event_inbox SET dead_at = NULL, attempts = 0, next_attempt_at = '-infinity'
WHERE project_id = %(project_id)s AND id = %(id)s AND dead_at IS NOT NULL
