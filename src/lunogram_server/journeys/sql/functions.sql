-- Journeys: entering runs, and the reactions to other domains' changes (reactions.py). Installed (CREATE OR
-- REPLACE) at every migrate.

-- Enter users through triggers (journey_triggers rows, entrances of live versions): p_entries is a JSON
-- array of [trigger, user, entry key, context] (one run per key and journey, ever: a replayed entry enters
-- no one twice). The journey's re-entry policy decides: 'once' (never again),
-- 'one_at_a_time' (not while a run is active: the unique index on active runs), 'always' (concurrent runs:
-- each its own lane), 'cooldown' (not within cooldown_seconds of the last entry). Returns how many entered;
-- the runners are woken (NOTIFY, delivered at commit).
-- (The entries once came as four parallel arrays: that overload goes.)
DROP FUNCTION IF EXISTS lunogram_journeys_enter(bigint[], uuid[], text[], jsonb[], timestamptz);
CREATE OR REPLACE FUNCTION lunogram_journeys_enter(p_entries jsonb, p_at timestamptz)
RETURNS integer LANGUAGE plpgsql AS $fn$
DECLARE
    v_count integer;
BEGIN
    WITH wanted AS (
        SELECT lunogram_new_id() AS run_id, t.project_id, t.journey_id, t.version, t.step AS entrance,
               t.next_step, c.user_id, c.entry_key, c.ctx, j.reentry, c.ord
        FROM (SELECT (e ->> 0)::bigint AS trigger_id, (e ->> 1)::uuid AS user_id, e ->> 2 AS entry_key,
                     nullif(e -> 3, 'null'::jsonb) AS ctx, ord
              FROM jsonb_array_elements(p_entries) WITH ORDINALITY AS x(e, ord)) AS c
        JOIN journey_triggers AS t ON t.id = c.trigger_id AND t.live
        JOIN journeys AS j ON j.id = t.journey_id AND j.status = 'live' AND j.live_version = t.version
        WHERE (j.reentry <> 'once'
               OR NOT EXISTS (SELECT 1 FROM journey_runs AS r WHERE r.journey_id = t.journey_id AND r.user_id = c.user_id))
          AND (j.reentry <> 'cooldown'
               OR NOT EXISTS (SELECT 1 FROM journey_runs AS r
                              WHERE r.journey_id = t.journey_id AND r.user_id = c.user_id
                                AND r.entered_at > p_at - make_interval(secs => j.cooldown_seconds)))
    ), inserted AS (
        INSERT INTO journey_runs AS r (id, project_id, journey_id, version, user_id, entrance, entry_key, lane, status,
                                       step, visit, due_at, context, entered_at, updated_at, step_at, ended_at)
        SELECT w.run_id, w.project_id, w.journey_id, w.version, w.user_id, w.entrance, w.entry_key,
               CASE WHEN w.reentry = 'always' THEN w.run_id ELSE '00000000-0000-0000-0000-000000000000'::uuid END,
               CASE WHEN w.next_step IS NULL THEN 'completed' ELSE 'active' END,
               coalesce(w.next_step, w.entrance), 1,
               CASE WHEN w.next_step IS NULL THEN NULL ELSE p_at END,
               coalesce(w.ctx, '{}'::jsonb) || jsonb_build_object('entered_at', p_at, 'visited', jsonb_build_array(w.entrance)),
               p_at, p_at, p_at,
               CASE WHEN w.next_step IS NULL THEN p_at END
        FROM wanted AS w
        ORDER BY w.ord
        ON CONFLICT DO NOTHING
        RETURNING r.id, r.journey_id, r.version, r.entrance
    ), taken AS (
        INSERT INTO journey_steps_taken (run_id, visit, journey_id, version, step, outcome, at)
        SELECT id, 0, journey_id, version, entrance, 'entered', p_at FROM inserted
    )
    SELECT count(*) INTO v_count FROM inserted;
    IF v_count > 0 THEN
        PERFORM pg_notify('lunogram_journeys', '');
    END IF;
    RETURN v_count;
END
$fn$;

-- End runs as converted by goal step p_goals[i] (a goal step is not on the runs' path: any step of theirs
-- may be interrupted), recording the goal as the step taken.
CREATE OR REPLACE FUNCTION lunogram_journeys_convert(p_runs uuid[], p_goals text[], p_details jsonb[], p_at timestamptz)
RETURNS integer LANGUAGE plpgsql AS $fn$
DECLARE
    v_count integer;
BEGIN
    WITH converted AS (
        UPDATE journey_runs AS r
        SET status = 'converted', ended_at = p_at, due_at = NULL, held_due_at = NULL, wait_event = NULL,
            visit = r.visit + 1, updated_at = p_at
        FROM (SELECT DISTINCT ON (run_id) run_id, goal, detail
              FROM unnest(p_runs, p_goals, p_details) AS g(run_id, goal, detail)) AS g
        WHERE r.id = g.run_id AND r.ended_at IS NULL
        RETURNING r.id, r.visit - 1 AS visit, r.journey_id, r.version, g.goal, g.detail
    )
    INSERT INTO journey_steps_taken (run_id, visit, journey_id, version, step, outcome, detail, at)
    SELECT id, visit, journey_id, version, goal, 'converted', detail, p_at FROM converted;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$fn$;

-- A rate-limit step lets up to p_wanted runs through its current window (of those that started at p_start,
-- at most p_limit pass); how many may pass now. The window's row is locked: concurrent batches queue.
CREATE OR REPLACE FUNCTION lunogram_journeys_rate_take(
    p_journey uuid, p_step text, p_start timestamptz, p_wanted integer, p_limit integer)
RETURNS integer LANGUAGE plpgsql AS $fn$
DECLARE
    v_passed integer;
    v_allowed integer;
BEGIN
    INSERT INTO journey_rate_windows (journey_id, step, window_start) VALUES (p_journey, p_step, p_start)
    ON CONFLICT DO NOTHING;
    SELECT passed INTO v_passed FROM journey_rate_windows
    WHERE journey_id = p_journey AND step = p_step AND window_start = p_start FOR UPDATE;
    v_allowed := least(p_wanted, greatest(p_limit - v_passed, 0));
    UPDATE journey_rate_windows SET passed = v_passed + v_allowed
    WHERE journey_id = p_journey AND step = p_step AND window_start = p_start;
    RETURN v_allowed;
END
$fn$;

-- Reactions. List entrances and list goals: users entering (or leaving) a list enter the journeys waiting
-- for that, and runs whose goal is entering it are converted.
CREATE OR REPLACE FUNCTION lunogram_journeys_on_list_changes(
    p_project uuid, p_list uuid, p_users uuid[], p_changes text[], p_at timestamptz)
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM journey_triggers WHERE list_id = p_list) THEN
        RETURN;
    END IF;
    PERFORM lunogram_journeys_enter(
        jsonb_agg(jsonb_build_array(t.id, c.user_id, 'list:' || c.change || ':' || p_list || ':' || c.user_id || ':' || p_at,
                                    NULL) ORDER BY c.ord, t.id),
        p_at)
    FROM journey_triggers AS t
    JOIN unnest(p_users, p_changes) WITH ORDINALITY AS c(user_id, change, ord) ON c.change = t.list_change
    WHERE t.list_id = p_list AND t.kind = 'list' AND t.live
    HAVING count(*) > 0;
    PERFORM lunogram_journeys_convert(array_agg(r.id), array_agg(t.step),
                                      array_agg(jsonb_build_object('list_id', p_list)), p_at)
    FROM journey_triggers AS t
    JOIN journey_runs AS r ON r.journey_id = t.journey_id AND r.version = t.version AND r.ended_at IS NULL
    JOIN unnest(p_users, p_changes) AS c(user_id, change) ON c.user_id = r.user_id AND c.change = 'entered'
    WHERE t.list_id = p_list AND t.kind = 'goal_list'
    HAVING count(*) > 0;
END
$fn$;

-- Schedule entrances: a schedule written (created or replaced) gets, for each live schedule entrance on its
-- name, an entry due at its next firing plus the entrance's offset (at once when that moment is past but
-- the firing is not); a replaced schedule's entries not yet due are recalculated.
CREATE OR REPLACE FUNCTION lunogram_journeys_on_schedules_written(p_project uuid, p_schedules uuid[])
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM journey_triggers WHERE project_id = p_project AND kind = 'schedule') THEN
        RETURN;
    END IF;
    DELETE FROM journey_schedule_entries WHERE schedule_id = ANY (p_schedules) AND due_at > now();
    PERFORM lunogram_journeys_plan_schedule_entries(p_schedules);
END
$fn$;

CREATE OR REPLACE FUNCTION lunogram_journeys_on_schedules_fired(p_schedules uuid[], p_at timestamptz)
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM journey_triggers WHERE kind = 'schedule') THEN
        RETURN;
    END IF;
    PERFORM lunogram_journeys_plan_schedule_entries(p_schedules);  -- each fired one's next firing
END
$fn$;

CREATE OR REPLACE FUNCTION lunogram_journeys_plan_schedule_entries(p_schedules uuid[])
RETURNS void LANGUAGE sql AS $fn$
    INSERT INTO journey_schedule_entries (trigger_id, schedule_id, project_id, occurrence_at, due_at)
    SELECT t.id, s.id, s.project_id, s.next_at,
           greatest(s.next_at + make_interval(secs => t.offset_seconds), now())
    FROM schedules AS s
    JOIN journey_triggers AS t
      ON t.project_id = s.project_id AND t.kind = 'schedule' AND t.live AND t.schedule_name = s.name
     AND t.schedule_kind = s.kind
    WHERE s.id = ANY (p_schedules) AND s.next_at IS NOT NULL
    ON CONFLICT DO NOTHING;
$fn$;

CREATE OR REPLACE FUNCTION lunogram_journeys_on_schedules_cancelled(p_project uuid, p_schedules uuid[])
RETURNS void LANGUAGE sql AS $fn$
    DELETE FROM journey_schedule_entries WHERE schedule_id = ANY (p_schedules);
$fn$;

-- A merged user's runs follow it. Where both had an active run of one journey (one lane), the one that
-- entered first goes on and the other ends as merged.
CREATE OR REPLACE FUNCTION lunogram_journeys_on_user_merged(p_project uuid, p_survivor uuid, p_merged uuid)
RETURNS void LANGUAGE sql AS $fn$
    UPDATE journey_runs AS x
    SET status = 'merged', ended_at = now(), due_at = NULL, held_due_at = NULL, wait_event = NULL, updated_at = now()
    FROM journey_runs AS y
    WHERE x.ended_at IS NULL AND y.ended_at IS NULL AND x.journey_id = y.journey_id AND x.lane = y.lane
      AND ((x.user_id = p_merged AND y.user_id = p_survivor) OR (x.user_id = p_survivor AND y.user_id = p_merged))
      AND (x.entered_at, x.id) > (y.entered_at, y.id);
    UPDATE journey_runs SET user_id = p_survivor, updated_at = now() WHERE user_id = p_merged;
$fn$;

-- Deleted users' runs end (their record stays, as 'deleted').
CREATE OR REPLACE FUNCTION lunogram_journeys_on_users_deleted(p_project uuid, p_users uuid[])
RETURNS void LANGUAGE sql AS $fn$
    UPDATE journey_runs
    SET status = 'deleted', ended_at = now(), due_at = NULL, held_due_at = NULL, wait_event = NULL, updated_at = now()
    WHERE user_id = ANY (p_users) AND ended_at IS NULL;
$fn$;
