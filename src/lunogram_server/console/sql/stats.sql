-- Event figures for the console (console/stats.py): kept by an event subscriber, read by the overview and
-- the events catalogue.

-- name: record_names
-- One row per (project, kind, name) of the batch, into this worker connection's shard (see the migration).
INSERT INTO event_name_stats AS s (project_id, kind, name, shard, count, first_seen_at, last_seen_at, sample)
SELECT x.project_id, x.kind, x.name, mod(pg_backend_pid(), 64)::smallint, x.count, now(), now(), x.sample
FROM unnest(%(projects)s::uuid[], %(kinds)s::text[], %(names)s::text[], %(counts)s::bigint[], %(samples)s::jsonb[])
    AS x (project_id, kind, name, count, sample)
ON CONFLICT (project_id, kind, name, shard) DO UPDATE
SET count = s.count + excluded.count, last_seen_at = excluded.last_seen_at,
    sample = coalesce(excluded.sample, s.sample);

-- name: record_minutes
-- Accepted per minute of acceptance, processed in the current minute.
INSERT INTO event_minute_stats AS s (project_id, minute, shard, accepted, processed)
SELECT x.project_id, coalesce(x.minute, date_trunc('minute', now())), mod(pg_backend_pid(), 64)::smallint,
       sum(x.accepted), sum(x.processed)
FROM unnest(%(projects)s::uuid[], %(minutes)s::timestamptz[], %(accepted)s::bigint[], %(processed)s::bigint[])
    AS x (project_id, minute, accepted, processed)
GROUP BY 1, 2, 3
ON CONFLICT (project_id, minute, shard) DO UPDATE
SET accepted = s.accepted + excluded.accepted, processed = s.processed + excluded.processed;

-- name: minutes
-- The last hour, per minute (minutes without events are absent).
SELECT minute, sum(accepted)::bigint, sum(processed)::bigint
FROM event_minute_stats
WHERE project_id = %(project_id)s AND minute > date_trunc('minute', now()) - interval '60 minutes'
GROUP BY minute ORDER BY minute;

-- name: send_minutes
-- Messages' events of the last hour, per minute and kind (sent, failed, bounced, ...).
SELECT date_trunc('minute', at) AS minute, kind, count(*)
FROM message_events
WHERE project_id = %(project_id)s AND at > date_trunc('minute', now()) - interval '60 minutes'
GROUP BY 1, 2 ORDER BY 1;

-- name: dead_count
SELECT count(*) FROM event_inbox WHERE project_id = %(project_id)s AND dead_at IS NOT NULL;

-- name: catalogue
-- Each event name of the project: how many, first and last seen, the latest sample.
SELECT kind, name, sum(count)::bigint AS count, min(first_seen_at) AS first_seen_at,
       max(last_seen_at) AS last_seen_at,
       (array_agg(sample ORDER BY last_seen_at DESC) FILTER (WHERE sample IS NOT NULL))[1] AS sample
FROM event_name_stats
WHERE project_id = %(project_id)s
GROUP BY kind, name
ORDER BY sum(count) DESC, name
LIMIT %(limit)s;

-- name: recent_user_events
-- The project's newest applied user events after `after`, looking back over at most `window` history ids
-- (one index range whatever the size of the history: a quiet project among busy ones shows less, fast).
SELECT e.id, e.name, e.data, e.accepted_at, e.user_id,
       (SELECT i.external_id FROM user_identifiers AS i WHERE i.user_id = e.user_id ORDER BY i.created_at LIMIT 1)
FROM user_events AS e
WHERE e.project_id = %(project_id)s
  AND e.id > greatest(%(after)s::bigint, (SELECT coalesce(max(id), 0) FROM user_events) - %(window)s)
ORDER BY e.id DESC
LIMIT %(limit)s;

-- name: recent_organization_events
SELECT e.id, e.name, e.data, e.accepted_at, e.organization_id,
       (SELECT i.external_id FROM organization_identifiers AS i WHERE i.organization_id = e.organization_id
        ORDER BY i.created_at LIMIT 1)
FROM organization_events AS e
WHERE e.project_id = %(project_id)s
  AND e.id > greatest(%(after)s::bigint, (SELECT coalesce(max(id), 0) FROM organization_events) - %(window)s)
ORDER BY e.id DESC
LIMIT %(limit)s;

-- name: purge
DELETE FROM event_minute_stats WHERE minute < now() - interval '2 days';
