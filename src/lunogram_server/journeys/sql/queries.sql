-- Journeys: the runner, the event subscriber and the admin API (journeys/).

-- name: evaluate
-- A journey rule (journeys/rules.py, `{predicate}`) for a batch of [user, run context] rows (one JSON array:
-- psycopg's dumping of a jsonb[] parameter costs ~50 µs a row, orjson's of one document ~1): the numbers
-- of the rows that match. `ev`, `og` and `rn` give the context's event, organization and run data the shape
-- of a profile (name, data), so the lists' property compiler serves them too. Each row's user is looked up
-- by id (LATERAL ... LIMIT 1 keeps the join a loop of index lookups: planned as a join, it hashed the whole
-- project's users whenever their statistics lagged, 9.5 ms instead of 0.2 for a batch of 27).
SELECT r.n
FROM (SELECT (x ->> 0)::uuid AS user_id, x -> 1 AS ctx, n
      FROM jsonb_array_elements(%(rows)s) WITH ORDINALITY AS t(x, n)) AS r
LEFT JOIN LATERAL (SELECT * FROM users WHERE id = r.user_id AND project_id = %(project_id)s LIMIT 1) AS u ON true
CROSS JOIN LATERAL (SELECT r.ctx -> 'event' ->> 'name' AS name, r.ctx -> 'event' -> 'data' AS data) AS ev
CROSS JOIN LATERAL (SELECT r.ctx -> 'organization' ->> 'name' AS name, r.ctx -> 'organization' -> 'data' AS data) AS og
CROSS JOIN LATERAL (SELECT r.ctx -> 'data' AS data) AS rn
WHERE {predicate}

-- name: claim_due
-- Runs whose time has come (a step to take, a delay or timeout over, a webhook to retry or whose call was
-- never recorded), oldest first, locked: any number of runners share them.
SELECT id, project_id, journey_id, version, user_id, status, step, visit, context, attempts, step_at, entered_at
FROM journey_runs
WHERE due_at <= %(now)s
ORDER BY due_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: graphs
SELECT journey_id, version, graph FROM journey_versions
WHERE (journey_id, version) IN (SELECT * FROM unnest(%(journeys)s::uuid[], %(versions)s::int[]))

-- name: journey_info
SELECT id, timezone, project_id FROM journeys WHERE id = ANY (%(ids)s::uuid[])

-- name: save_runs
-- The batch's runs, as one JSON array of their new state (one document: see evaluate).
UPDATE journey_runs AS r
SET status = v.status, step = v.step, visit = v.visit, due_at = v.due_at, wait_event = v.wait_event,
    context = v.context, attempts = v.attempts, step_at = v.step_at, error = v.error,
    ended_at = CASE WHEN v.ended THEN %(now)s END, updated_at = %(now)s
FROM jsonb_to_recordset(%(runs)s) AS v(id uuid, status text, step text, visit integer, due_at timestamptz,
                                        wait_event text, context jsonb, attempts integer, step_at timestamptz,
                                        error text, ended boolean)
WHERE r.id = v.id

-- name: fail_run
-- A run that failed alone (its batch failed, then it did on its own): it ends, with the reason on record.
WITH failed AS (
    UPDATE journey_runs
    SET status = 'failed', error = %(error)s, ended_at = %(now)s, due_at = NULL, wait_event = NULL,
        visit = visit + 1, updated_at = %(now)s
    WHERE id = %(id)s
    RETURNING id, visit - 1 AS visit, journey_id, version, step
)
INSERT INTO journey_steps_taken (run_id, visit, journey_id, version, step, outcome, detail, at)
SELECT id, visit, journey_id, version, step, 'failed', jsonb_build_object('error', %(error)s::text), %(now)s
FROM failed
ON CONFLICT DO NOTHING

-- name: record_steps
INSERT INTO journey_steps_taken (run_id, visit, journey_id, version, step, outcome, detail, at)
SELECT run_id, visit, journey_id, version, step, outcome, detail, at
FROM jsonb_to_recordset(%(steps)s) AS t(run_id uuid, visit integer, journey_id uuid, version integer, step text,
                                        outcome text, detail jsonb, at timestamptz)
ON CONFLICT DO NOTHING

-- name: people
-- What steps and templates read of a user: its fields, data and identifiers (`external_id`: the first).
SELECT u.id, jsonb_build_object(
    'id', u.id, 'email', u.email, 'phone', u.phone, 'timezone', u.timezone, 'locale', u.locale, 'data', u.data,
    'external_id', (SELECT i.external_id FROM user_identifiers AS i WHERE i.user_id = u.id
                    ORDER BY i.created_at, i.id LIMIT 1),
    'identifier', (SELECT jsonb_agg(jsonb_build_object('source', i.source, 'external_id', i.external_id)
                                    ORDER BY i.created_at, i.id)
                   FROM user_identifiers AS i WHERE i.user_id = u.id))
FROM users AS u WHERE u.id = ANY (%(ids)s::uuid[])

-- name: events_since
-- For runs arriving at a wait step: the user's events of that name since each run began (at most 20 each,
-- oldest first), the first of which matching the step's rule resolves the wait at once.
SELECT c.n, e.name, e.data, e.accepted_at
FROM unnest(%(users)s::uuid[], %(since)s::timestamptz[]) WITH ORDINALITY AS c(user_id, since, n)
CROSS JOIN LATERAL (
    SELECT name, data, accepted_at FROM user_events AS e
    WHERE e.user_id = c.user_id AND e.name = %(name)s AND e.accepted_at >= c.since
    ORDER BY e.id LIMIT 20) AS e
ORDER BY c.n

-- name: rate_take
SELECT lunogram_journeys_rate_take(%(journey_id)s, %(step)s, %(start)s, %(wanted)s, %(limit)s)

-- name: update_users
-- An update step: data merged into each user through the set-wise upsert (identity/sql/batch.sql), named
-- by its first identifier, so version, lists and everything else follow as for a Client API upsert. Items
-- in lock order (as db/coalesce.py sorts them). Returns the users updated.
WITH items AS (
    SELECT c.project_id, c.fields,
           (SELECT jsonb_build_array(jsonb_build_object('source', i.source, 'external_id', i.external_id))
            FROM user_identifiers AS i WHERE i.user_id = c.user_id ORDER BY i.created_at, i.id LIMIT 1) AS identifiers
    FROM unnest(%(project_ids)s::uuid[], %(user_ids)s::uuid[], %(fields)s::jsonb[]) AS c(project_id, user_id, fields)
)
SELECT (a.answer::jsonb ->> 'id')::uuid
FROM lunogram_upsert_users((
    SELECT coalesce(jsonb_agg(jsonb_build_array(project_id, identifiers, fields)
                              ORDER BY project_id, identifiers -> 0 ->> 'source', identifiers -> 0 ->> 'external_id'),
                    '[]'::jsonb)
    FROM items WHERE identifiers IS NOT NULL)) AS a(answer)

-- name: static_list
SELECT kind FROM lists WHERE id = %(list_id)s AND project_id = %(project_id)s

-- name: list_add
SELECT lunogram_list_add(%(project_id)s, %(list_id)s, %(users)s::uuid[])

-- name: list_remove
SELECT lunogram_list_remove(%(project_id)s, %(list_id)s, %(users)s::uuid[])

-- name: emit_events
-- An emit step: each user's event into the event pipeline, named by the user's identifiers (as ingest does:
-- the first one's partition keeps one user's events in order). Returns the users it was emitted for.
WITH targets AS (
    SELECT c.project_id, c.user_id, c.data,
           (SELECT jsonb_agg(jsonb_build_object('source', i.source, 'external_id', i.external_id)
                             ORDER BY i.created_at, i.id)
            FROM user_identifiers AS i WHERE i.user_id = c.user_id) AS identifiers
    FROM unnest(%(project_ids)s::uuid[], %(user_ids)s::uuid[], %(datas)s::jsonb[]) WITH ORDINALITY AS c(project_id, user_id, data, n)
    ORDER BY c.n
), queued AS (
    INSERT INTO event_inbox (project_id, kind, partition, name, data, identifiers)
    SELECT project_id, 'user',
           lunogram_event_partition(project_id, 'user',
                                    (identifiers -> 0 ->> 'source') || ':' || (identifiers -> 0 ->> 'external_id')),
           %(name)s, data, identifiers
    FROM targets WHERE identifiers IS NOT NULL
)
SELECT user_id FROM targets WHERE identifiers IS NOT NULL

-- name: api_trigger
-- The API entrance of a live journey (the first one, by step key)
SELECT t.id FROM journey_triggers AS t
JOIN journeys AS j ON j.id = t.journey_id AND j.status = 'live' AND j.live_version = t.version
WHERE t.journey_id = %(journey_id)s AND j.project_id = %(project_id)s AND t.kind = 'api' AND t.live
ORDER BY t.step LIMIT 1

-- name: enter
-- %(entries)s: [[trigger, user, entry key, context], ...]
SELECT lunogram_journeys_enter(%(entries)s, %(at)s)

-- name: queue_sends
INSERT INTO message_outbox (project_id, user_id, run_id, visit, journey_id, step, channel, template_id, data)
SELECT c.project_id, c.user_id, c.run_id, c.visit, %(journey_id)s, %(step)s, %(channel)s, %(template_id)s, c.data
FROM unnest(%(project_ids)s::uuid[], %(user_ids)s::uuid[], %(run_ids)s::uuid[], %(visits)s::int[], %(datas)s::jsonb[])
     AS c(project_id, user_id, run_id, visit, data)
ON CONFLICT (run_id, visit) DO NOTHING

-- name: webhook_done
-- A webhook's outcome, for the call made at (run, visit): only if the run is still there (not moved on,
-- merged or deleted meanwhile), so an outcome recorded twice moves the run once.
UPDATE journey_runs
SET status = %(status)s, step = %(step)s, visit = %(visit)s + %(advance)s, due_at = %(due_at)s,
    context = %(context)s, attempts = %(attempts)s, error = %(error)s, step_at = %(now)s,
    ended_at = CASE WHEN %(ended)s THEN %(now)s END, updated_at = %(now)s
WHERE id = %(run_id)s AND visit = %(visit)s AND status = 'calling'
RETURNING context

-- name: webhook_run
SELECT context FROM journey_runs WHERE id = %(run_id)s AND visit = %(visit)s AND status = 'calling' FOR UPDATE

-- name: claim_schedule_entries
-- Schedule entrances whose moment has come, locked (any number of runners share them).
SELECT e.trigger_id, e.schedule_id, e.occurrence_at, t.schedule_kind, s.user_id, s.organization_id, s.name, s.data
FROM journey_schedule_entries AS e
JOIN journey_triggers AS t ON t.id = e.trigger_id
LEFT JOIN schedules AS s ON s.id = e.schedule_id
WHERE e.due_at <= %(now)s
ORDER BY e.due_at
LIMIT %(limit)s
FOR UPDATE OF e SKIP LOCKED

-- name: forget_schedule_entries
DELETE FROM journey_schedule_entries AS e
USING unnest(%(triggers)s::bigint[], %(schedules)s::uuid[], %(occurrences)s::timestamptz[]) AS d(t, s, o)
WHERE e.trigger_id = d.t AND e.schedule_id = d.s AND e.occurrence_at = d.o

-- name: organizations
SELECT id::text, name, data FROM organizations WHERE id = ANY (%(ids)s::uuid[])

-- name: organization_members
SELECT user_id FROM organization_members WHERE organization_id = %(organization_id)s ORDER BY user_id

-- name: claim_backfill
SELECT b.trigger_id, b.after_user, t.list_id, t.project_id FROM journey_backfills AS b
JOIN journey_triggers AS t ON t.id = b.trigger_id
ORDER BY b.created_at LIMIT 1 FOR UPDATE OF b SKIP LOCKED

-- name: backfill_chunk
SELECT user_id FROM list_members WHERE list_id = %(list_id)s AND user_id > %(after)s ORDER BY user_id LIMIT %(limit)s

-- name: backfill_advance
UPDATE journey_backfills SET after_user = %(after)s WHERE trigger_id = %(trigger_id)s

-- name: backfill_done
DELETE FROM journey_backfills WHERE trigger_id = %(trigger_id)s

-- name: event_triggers
-- The event names a batch of applied events may matter to: entrances (live versions only), goals and waits.
SELECT t.id, t.project_id, t.journey_id, t.version, t.step, t.kind, t.event_name, t.rule
FROM journey_triggers AS t
WHERE t.project_id = ANY (%(projects)s::uuid[]) AND t.event_name = ANY (%(names)s::text[])
  AND (t.live OR t.kind IN ('goal_event', 'wait_event'))

-- name: waiting_runs
-- Runs of these users waiting for one of these events (wait steps), with when they began.
SELECT id, project_id, journey_id, version, user_id, step, visit, context, entered_at, wait_event
FROM journey_runs
WHERE user_id = ANY (%(users)s::uuid[]) AND status = 'waiting' AND wait_event = ANY (%(names)s::text[])
  AND ended_at IS NULL

-- name: goal_runs
-- Active runs of these users in the journey versions that have these goals.
SELECT r.id, r.project_id, r.journey_id, r.version, r.user_id, r.context
FROM journey_runs AS r
WHERE r.user_id = ANY (%(users)s::uuid[]) AND r.ended_at IS NULL
  AND (r.journey_id, r.version) IN (SELECT * FROM unnest(%(journeys)s::uuid[], %(versions)s::int[]))

-- name: resolve_waits
-- Waits received their event: each run moves to its wait step's next (due now) with the event in its
-- context, if it is still waiting at that visit; the step taken is recorded.
WITH moved AS (
    UPDATE journey_runs AS r
    SET status = CASE WHEN w.next_step IS NULL THEN 'completed' ELSE 'active' END,
        step = coalesce(w.next_step, r.step), visit = r.visit + 1,
        due_at = CASE WHEN w.next_step IS NULL THEN NULL ELSE %(now)s END,
        ended_at = CASE WHEN w.next_step IS NULL THEN %(now)s END,
        wait_event = NULL, attempts = 0, step_at = %(now)s, updated_at = %(now)s,
        context = r.context || jsonb_build_object('event', w.event,
                                                  'visited', (r.context -> 'visited') || to_jsonb(r.step))
    FROM unnest(%(run_ids)s::uuid[], %(visits)s::int[], %(wait_steps)s::text[], %(next_steps)s::text[],
                %(events)s::jsonb[]) AS w(run_id, visit, wait_step, next_step, event)
    WHERE r.id = w.run_id AND r.visit = w.visit AND r.status = 'waiting' AND r.step = w.wait_step
    RETURNING r.id, r.visit - 1 AS visit, r.journey_id, r.version, w.wait_step, w.event
), taken AS (
    INSERT INTO journey_steps_taken (run_id, visit, journey_id, version, step, outcome, detail, at)
    SELECT id, visit, journey_id, version, wait_step, 'received', jsonb_build_object('event', event ->> 'name'), %(now)s
    FROM moved
    ON CONFLICT DO NOTHING
)
SELECT count(*) FROM moved

-- name: convert
SELECT lunogram_journeys_convert(%(run_ids)s::uuid[], %(goals)s::text[], %(details)s::jsonb[], %(now)s)

-- name: notify
SELECT pg_notify('lunogram_journeys', '')
