-- Journeys: the admin API (journeys/service.py). Every statement is scoped by project, directly or through a
-- journey locked or read by project first.

-- name: create
WITH journey AS (
    INSERT INTO journeys (project_id, name, description, timezone, reentry, cooldown_seconds)
    VALUES (%(project_id)s, %(name)s, %(description)s, %(timezone)s, %(reentry)s, %(cooldown_seconds)s)
    RETURNING id
), version AS (
    INSERT INTO journey_versions (journey_id, version, graph) SELECT id, 1, %(graph)s FROM journey
)
SELECT id FROM journey

-- name: detail
-- A journey with its versions, the graph of its live version and of its draft (the latest, if unpublished).
SELECT jsonb_build_object(
    'id', j.id, 'project_id', j.project_id, 'name', j.name, 'description', j.description, 'status', j.status,
    'live_version', j.live_version, 'latest_version', j.latest_version, 'timezone', j.timezone,
    'reentry', j.reentry, 'cooldown_seconds', j.cooldown_seconds, 'created_at', j.created_at,
    'updated_at', j.updated_at,
    'versions', (SELECT jsonb_agg(jsonb_build_object('version', v.version, 'published_at', v.published_at,
                                                     'created_at', v.created_at, 'updated_at', v.updated_at)
                                  ORDER BY v.version)
                 FROM journey_versions AS v WHERE v.journey_id = j.id),
    'live_graph', (SELECT v.graph FROM journey_versions AS v WHERE v.journey_id = j.id AND v.version = j.live_version),
    'draft_graph', (SELECT v.graph FROM journey_versions AS v
                    WHERE v.journey_id = j.id AND v.version = j.latest_version AND v.published_at IS NULL)
) AS journey
FROM journeys AS j WHERE j.id = %(id)s AND j.project_id = %(project_id)s

-- name: version_of
-- One version of a journey (published or the draft), for the editor's read-only view of past versions.
SELECT jsonb_build_object('journey_id', v.journey_id, 'version', v.version, 'graph', v.graph,
                          'published_at', v.published_at, 'created_at', v.created_at, 'updated_at', v.updated_at)
FROM journey_versions AS v JOIN journeys AS j ON j.id = v.journey_id
WHERE v.journey_id = %(id)s AND j.project_id = %(project_id)s AND v.version = %(version)s

-- name: page
SELECT jsonb_build_object('id', j.id, 'name', j.name, 'status', j.status, 'live_version', j.live_version,
                          'latest_version', j.latest_version, 'created_at', j.created_at, 'updated_at', j.updated_at)
FROM journeys AS j WHERE j.project_id = %(project_id)s
ORDER BY j.created_at DESC, j.id DESC LIMIT %(limit)s OFFSET %(offset)s

-- name: lock
SELECT * FROM journeys WHERE id = %(id)s AND project_id = %(project_id)s FOR UPDATE

-- name: latest
SELECT j.latest_version, v.graph, v.published_at FROM journeys AS j
JOIN journey_versions AS v ON v.journey_id = j.id AND v.version = j.latest_version
WHERE j.id = %(id)s AND j.project_id = %(project_id)s

-- name: status_of
SELECT status FROM journeys WHERE id = %(id)s AND project_id = %(project_id)s

-- name: update
UPDATE journeys SET name = %(name)s, description = %(description)s, timezone = %(timezone)s,
                    reentry = %(reentry)s, cooldown_seconds = %(cooldown_seconds)s, updated_at = now()
WHERE id = %(id)s

-- name: save_draft
-- Edit the draft; when the latest version is published, the edit starts the next version.
WITH current AS (
    SELECT j.latest_version, v.published_at FROM journeys AS j
    JOIN journey_versions AS v ON v.journey_id = j.id AND v.version = j.latest_version
    WHERE j.id = %(id)s
), edited AS (
    UPDATE journey_versions SET graph = %(graph)s, updated_at = now()
    WHERE journey_id = %(id)s AND version = (SELECT latest_version FROM current)
      AND (SELECT published_at FROM current) IS NULL
    RETURNING version
), added AS (
    INSERT INTO journey_versions (journey_id, version, graph)
    SELECT %(id)s, latest_version + 1, %(graph)s FROM current WHERE published_at IS NOT NULL
    RETURNING version
)
UPDATE journeys SET latest_version = coalesce((SELECT version FROM added), latest_version), updated_at = now()
WHERE id = %(id)s

-- name: lists_of
SELECT id, kind FROM lists WHERE project_id = %(project_id)s AND id = ANY (%(ids)s::uuid[])

-- name: journeys_of
SELECT id FROM journeys WHERE project_id = %(project_id)s AND id = ANY (%(ids)s::uuid[])

-- name: graph_of
SELECT graph FROM journey_versions WHERE journey_id = %(id)s AND version = %(version)s

-- name: publish_version
UPDATE journey_versions SET published_at = now() WHERE journey_id = %(id)s AND version = %(version)s

-- name: retire_entrances
-- The previous live version's entrances stop entering; its goals and waits still serve its runs. Its
-- schedule entries not yet entered go (the new version plans its own).
WITH retired AS (
    UPDATE journey_triggers SET live = false WHERE journey_id = %(id)s AND live
    RETURNING id
)
DELETE FROM journey_schedule_entries WHERE trigger_id IN (SELECT id FROM retired)

-- name: add_trigger
INSERT INTO journey_triggers (project_id, journey_id, version, step, kind, live, next_step, event_name, list_id,
                              list_change, schedule_kind, schedule_name, offset_seconds, rule)
VALUES (%(project_id)s, %(journey_id)s, %(version)s, %(step)s, %(kind)s, %(live)s, %(next_step)s, %(event_name)s,
        %(list_id)s, %(list_change)s, %(schedule_kind)s, %(schedule_name)s, %(offset_seconds)s, %(rule)s)

-- name: move_runs
-- Runs on mapped steps of the previous live version move to the new version's steps.
UPDATE journey_runs AS r SET version = %(new)s, step = m.to_step, updated_at = now()
FROM unnest(%(from_steps)s::text[], %(to_steps)s::text[]) AS m(from_step, to_step)
WHERE r.journey_id = %(id)s AND r.version = %(old)s AND r.ended_at IS NULL AND r.step = m.from_step

-- name: plan_schedules
-- Schedule entrances of the new live version: entries for the schedules that exist already.
SELECT lunogram_journeys_plan_schedule_entries(ARRAY(
    SELECT s.id FROM journey_triggers AS t
    JOIN schedules AS s ON s.project_id = t.project_id AND s.name = t.schedule_name AND s.kind = t.schedule_kind
    WHERE t.journey_id = %(id)s AND t.version = %(version)s AND t.kind = 'schedule' AND s.next_at IS NOT NULL))

-- name: start_backfills
-- List entrances that enter the list's current members: walked in chunks by the runners.
INSERT INTO journey_backfills (trigger_id, project_id)
SELECT t.id, t.project_id FROM journey_triggers AS t
JOIN journey_versions AS v ON v.journey_id = t.journey_id AND v.version = t.version
WHERE t.journey_id = %(id)s AND t.version = %(version)s AND t.kind = 'list' AND t.list_change = 'entered'
  AND coalesce((v.graph -> 'steps' -> t.step -> 'trigger' ->> 'enter_current_members')::boolean, false)

-- name: go_live
UPDATE journeys SET live_version = %(version)s, status = CASE WHEN status = 'paused' THEN 'paused' ELSE 'live' END,
                    updated_at = now()
WHERE id = %(id)s

-- name: pause
-- No entries while paused, and runs stand still: their due times are held until resume.
WITH journey AS (
    UPDATE journeys SET status = 'paused', updated_at = now() WHERE id = %(id)s
)
UPDATE journey_runs SET held_due_at = due_at, due_at = NULL
WHERE journey_id = %(id)s AND due_at IS NOT NULL

-- name: resume
WITH journey AS (
    UPDATE journeys SET status = 'live', updated_at = now() WHERE id = %(id)s
)
UPDATE journey_runs SET due_at = held_due_at, held_due_at = NULL
WHERE journey_id = %(id)s AND held_due_at IS NOT NULL

-- name: archive
-- Archived: nothing enters; runs still going end as cancelled (their record stays).
WITH journey AS (
    UPDATE journeys SET status = 'archived', updated_at = now() WHERE id = %(id)s
), triggers AS (
    UPDATE journey_triggers SET live = false WHERE journey_id = %(id)s AND live
)
UPDATE journey_runs
SET status = 'cancelled', ended_at = now(), due_at = NULL, held_due_at = NULL, wait_event = NULL, updated_at = now()
WHERE journey_id = %(id)s AND ended_at IS NULL

-- name: duplicate
WITH source AS (
    SELECT j.*, v.graph FROM journeys AS j
    JOIN journey_versions AS v ON v.journey_id = j.id AND v.version = j.latest_version
    WHERE j.id = %(id)s
), copy AS (
    INSERT INTO journeys (project_id, name, description, timezone, reentry, cooldown_seconds)
    SELECT project_id, left('Copy of ' || name, 255), description, timezone, reentry, cooldown_seconds FROM source
    RETURNING id
), version AS (
    INSERT INTO journey_versions (journey_id, version, graph) SELECT copy.id, 1, source.graph FROM copy, source
)
SELECT id FROM copy

-- name: api_triggers
SELECT t.id, t.step FROM journey_triggers AS t
JOIN journeys AS j ON j.id = t.journey_id
WHERE t.journey_id = %(id)s AND j.project_id = %(project_id)s AND t.kind = 'api' AND t.live

-- name: resolve_user
SELECT entity_id FROM lunogram_resolve_user(%(project_id)s, %(identifiers)s, true)

-- name: find_user
SELECT entity_id FROM lunogram_resolve_user(%(project_id)s, %(identifiers)s, false) ORDER BY entity_id LIMIT 1

-- name: enter_one
SELECT lunogram_journeys_enter(jsonb_build_array(jsonb_build_array(%(trigger)s::bigint, %(user)s::uuid,
                                                                   %(key)s::text, %(context)s::jsonb)), %(at)s)

-- name: run_by_key
SELECT id FROM journey_runs WHERE journey_id = %(id)s AND entry_key = %(key)s

-- name: stats
-- Per version: entered, where runs are now, how they ended, and how many went through each step.
SELECT coalesce(jsonb_object_agg(v.version::text, jsonb_build_object(
    'entered', (SELECT count(*) FROM journey_runs AS r WHERE r.journey_id = v.journey_id AND r.version = v.version),
    'ended', coalesce((SELECT jsonb_object_agg(status, n) FROM (
                  SELECT status, count(*) AS n FROM journey_runs AS r
                  WHERE r.journey_id = v.journey_id AND r.version = v.version AND r.ended_at IS NOT NULL
                  GROUP BY status) AS e), '{}'::jsonb),
    'in_step', coalesce((SELECT jsonb_object_agg(step, n) FROM (
                  SELECT step, count(*) AS n FROM journey_runs AS r
                  WHERE r.journey_id = v.journey_id AND r.version = v.version AND r.ended_at IS NULL
                  GROUP BY step) AS a), '{}'::jsonb),
    'through_step', coalesce((SELECT jsonb_object_agg(step, n) FROM (
                  SELECT step, count(*) AS n FROM journey_steps_taken AS t
                  WHERE t.journey_id = v.journey_id AND t.version = v.version
                  GROUP BY step) AS s), '{}'::jsonb),
    'outcomes', coalesce((SELECT jsonb_object_agg(step, outcomes) FROM (
                  SELECT step, jsonb_object_agg(outcome, n) AS outcomes FROM (
                      SELECT step, outcome, count(*) AS n FROM journey_steps_taken AS t
                      WHERE t.journey_id = v.journey_id AND t.version = v.version
                      GROUP BY step, outcome) AS o GROUP BY step) AS so), '{}'::jsonb)
)), '{}'::jsonb)
FROM journey_versions AS v WHERE v.journey_id = %(id)s AND v.published_at IS NOT NULL

-- name: runs_of_journey
SELECT jsonb_build_object('id', r.id, 'user_id', r.user_id, 'version', r.version, 'status', r.status,
                          'step', r.step, 'entered_at', r.entered_at, 'ended_at', r.ended_at, 'due_at', r.due_at,
                          'error', r.error)
FROM journey_runs AS r
WHERE r.journey_id = %(id)s AND (%(status)s::text IS NULL OR r.status = %(status)s)
ORDER BY r.entered_at DESC, r.id DESC LIMIT %(limit)s OFFSET %(offset)s

-- name: run_detail
-- A run with every step it took (when, what came of it, why) and the messages its send steps queued.
SELECT jsonb_build_object(
    'id', r.id, 'journey_id', r.journey_id, 'version', r.version, 'user_id', r.user_id, 'status', r.status,
    'step', r.step, 'visit', r.visit, 'entrance', r.entrance, 'entry_key', r.entry_key, 'context', r.context,
    'due_at', r.due_at, 'wait_event', r.wait_event, 'error', r.error, 'attempts', r.attempts,
    'entered_at', r.entered_at, 'ended_at', r.ended_at, 'updated_at', r.updated_at,
    'steps', coalesce((SELECT jsonb_agg(jsonb_build_object('visit', t.visit, 'step', t.step, 'outcome', t.outcome,
                                                           'detail', t.detail, 'at', t.at) ORDER BY t.visit)
                       FROM journey_steps_taken AS t WHERE t.run_id = r.id), '[]'::jsonb),
    'messages', coalesce((SELECT jsonb_agg(jsonb_build_object('id', m.id, 'channel', m.channel, 'template_id',
                                                              m.template_id, 'step', m.step, 'visit', m.visit,
                                                              'status', m.status, 'created_at', m.created_at)
                                           ORDER BY m.visit)
                          FROM message_outbox AS m WHERE m.run_id = r.id), '[]'::jsonb))
FROM journey_runs AS r WHERE r.id = %(id)s AND r.project_id = %(project_id)s

-- name: runs_of_user
-- A user's runs, newest first, each with its path.
SELECT jsonb_build_object(
    'id', r.id, 'journey_id', r.journey_id, 'journey_name', j.name, 'version', r.version, 'status', r.status,
    'step', r.step, 'entered_at', r.entered_at, 'ended_at', r.ended_at, 'error', r.error,
    'steps', coalesce((SELECT jsonb_agg(jsonb_build_object('visit', t.visit, 'step', t.step, 'outcome', t.outcome,
                                                           'detail', t.detail, 'at', t.at) ORDER BY t.visit)
                       FROM journey_steps_taken AS t WHERE t.run_id = r.id), '[]'::jsonb))
FROM journey_runs AS r JOIN journeys AS j ON j.id = r.journey_id
WHERE r.project_id = %(project_id)s AND r.user_id = %(user_id)s
ORDER BY r.entered_at DESC, r.id DESC LIMIT %(limit)s

-- name: simulation_graph
-- The version a dry run walks: the live one, or the latest when nothing is live yet.
SELECT v.version, v.graph FROM journeys AS j
JOIN journey_versions AS v ON v.journey_id = j.id AND v.version = coalesce(j.live_version, j.latest_version)
WHERE j.id = %(id)s AND j.project_id = %(project_id)s
