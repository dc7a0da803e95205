-- Rule list membership (lists/membership.py). `{predicate}` is the compiled rule over `u` (lists/rules.py),
-- Entries and exits are recorded in list_changes and announced to lunogram_on_list_changes (reactions.py)
-- by the statement that makes them.
-- Full recomputes hold the list's advisory lock exclusively, re-evaluations for a few users share it: a
-- re-evaluation never interleaves with a recompute that would not see its users' new events.

-- name: claim_stale
-- a list whose members lag its rule; SKIP LOCKED: any number of recomputers share the work
SELECT id, project_id, rule, rule_version FROM lists
WHERE computed_version < rule_version
ORDER BY updated_at
LIMIT 1
FOR UPDATE SKIP LOCKED;

-- name: claim_time_due
-- a list with time windows not evaluated for `every`: time alone may have moved users in or out
SELECT id, project_id, rule, rule_version FROM lists
WHERE uses_time AND kind = 'rule' AND computed_version = rule_version
  AND computed_at < %(now)s - %(every)s * interval '1 second'
ORDER BY computed_at
LIMIT 1
FOR UPDATE SKIP LOCKED;

-- name: lock_exclusive
SELECT pg_advisory_xact_lock(hashtextextended(%(list_id)s::text, 7));

-- name: try_lock_shared
SELECT pg_try_advisory_xact_lock_shared(hashtextextended(%(list_id)s::text, 7));

-- name: mark_computed
-- with an error: the rule could not be evaluated; it leaves the queue (members unchanged) until changed
UPDATE lists SET computed_version = %(rule_version)s, computed_at = %(now)s, error = %(error)s
WHERE id = %(list_id)s AND computed_version <= %(rule_version)s;

-- name: chunk_end
-- where the next chunk of a project's users starts (NULL: the rest is the last chunk)
SELECT id FROM users WHERE project_id = %(project_id)s AND id >= %(low)s ORDER BY id OFFSET %(size)s LIMIT 1;

-- name: count_users
SELECT count(*) FROM users WHERE project_id = %(project_id)s;

-- name: report_progress
INSERT INTO list_recompute_progress (list_id, done, total, started_at)
VALUES (%(list_id)s, %(done)s, %(total)s, %(started_at)s)
ON CONFLICT (list_id) DO UPDATE SET done = excluded.done, total = excluded.total,
    started_at = excluded.started_at, updated_at = now();

-- name: forget_progress
DELETE FROM list_recompute_progress WHERE list_id = %(list_id)s;

-- name: evaluate
-- members := the users in scope the predicate matches. {users} scopes `u`, {members} scopes `m`: a chunk
-- of the project's users (ids in [low, high), full recompute) or the given users (re-evaluation).
WITH matching AS MATERIALIZED (
    SELECT u.id FROM users AS u WHERE u.project_id = %(project_id)s AND {users} AND {predicate}
), entered AS (
    INSERT INTO list_members (list_id, user_id, project_id)
    SELECT %(list_id)s, id, %(project_id)s FROM matching
    ON CONFLICT DO NOTHING
    RETURNING user_id
), exited AS (
    DELETE FROM list_members AS m
    WHERE m.list_id = %(list_id)s AND {members} AND NOT EXISTS (SELECT 1 FROM matching AS x WHERE x.id = m.user_id)
    RETURNING m.user_id
), recorded AS (
    INSERT INTO list_changes (project_id, list_id, user_id, change, at)
    SELECT %(project_id)s, %(list_id)s, user_id, 'entered', %(now)s FROM entered
    UNION ALL
    SELECT %(project_id)s, %(list_id)s, user_id, 'exited', %(now)s FROM exited
    RETURNING user_id, change
), announced AS (
    SELECT lunogram_on_list_changes(%(project_id)s, %(list_id)s, array_agg(user_id), array_agg(change), %(now)s)
    FROM recorded HAVING count(*) > 0
)
SELECT count(*) FILTER (WHERE change = 'entered'), count(*) FILTER (WHERE change = 'exited'),
       (SELECT count(*) FROM announced)
FROM recorded;

-- name: affected
-- rule lists of a project a change can move users in or out of: by event name, by profile, by other lists;
-- all of them for `everything` (queued users: a merge moves history and memberships as well as data)
-- (not failed ones: a rule the database cannot evaluate waits for its owner to change it)
SELECT id, rule, rule_version FROM lists
WHERE project_id = %(project_id)s AND kind = 'rule' AND error IS NULL
  AND (%(everything)s OR event_names && %(names)s::text[] OR (%(profile)s AND uses_profile)
       OR referenced_lists && %(lists)s::uuid[])
ORDER BY id;

-- name: queue_users
INSERT INTO list_pending_users (project_id, user_id)
SELECT %(project_id)s, id FROM users WHERE id = ANY (%(user_ids)s::uuid[])
ON CONFLICT (user_id) DO NOTHING;

-- name: claim_pending
DELETE FROM list_pending_users
WHERE user_id IN (SELECT user_id FROM list_pending_users ORDER BY queued_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING project_id, user_id, everything;
