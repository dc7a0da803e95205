-- Lists: functions the upsert (identity/sql/profile.sql) and list writes call. Installed at every migrate.

-- Queue users (p_users[i] of project p_projects[i]) for re-evaluation, only those of projects where some
-- rule list looks at profiles.
CREATE OR REPLACE FUNCTION lunogram_lists_users_changed(p_projects uuid[], p_users uuid[]) RETURNS void
LANGUAGE sql AS $fn$
    INSERT INTO list_pending_users (project_id, user_id)
    SELECT c.project_id, c.user_id
    FROM unnest(p_projects, p_users) AS c(project_id, user_id)
    WHERE EXISTS (SELECT 1 FROM lists WHERE project_id = c.project_id AND uses_profile)
    ON CONFLICT (user_id) DO NOTHING
$fn$;

CREATE OR REPLACE FUNCTION lunogram_lists_user_changed(p_project uuid, p_user uuid) RETURNS void
LANGUAGE sql AS $fn$
    SELECT lunogram_lists_users_changed(ARRAY[p_project], ARRAY[p_user])
$fn$;

-- Add users to a list (static lists: by hand, by import), recording each entry; how many entered.
CREATE OR REPLACE FUNCTION lunogram_list_add(p_project uuid, p_list uuid, p_users uuid[]) RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    v_added uuid[];
BEGIN
    WITH added AS (
        INSERT INTO list_members (list_id, user_id, project_id)
        SELECT p_list, u, p_project FROM unnest(p_users) AS u
        ON CONFLICT DO NOTHING
        RETURNING user_id
    )
    SELECT coalesce(array_agg(user_id), '{}') INTO v_added FROM added;
    PERFORM lunogram_list_record(p_project, p_list, v_added, 'entered', now());
    RETURN cardinality(v_added);
END
$fn$;

-- Remove users from a list (static lists), recording each exit; how many left.
CREATE OR REPLACE FUNCTION lunogram_list_remove(p_project uuid, p_list uuid, p_users uuid[]) RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    v_removed uuid[];
BEGIN
    WITH removed AS (
        DELETE FROM list_members WHERE list_id = p_list AND user_id = ANY (p_users)
        RETURNING user_id
    )
    SELECT coalesce(array_agg(user_id), '{}') INTO v_removed FROM removed;
    PERFORM lunogram_list_record(p_project, p_list, v_removed, 'exited', now());
    RETURN cardinality(v_removed);
END
$fn$;

-- Record entries or exits of one list in list_changes and announce them (lunogram_on_list_changes).
CREATE OR REPLACE FUNCTION lunogram_list_record(
    p_project uuid, p_list uuid, p_users uuid[], p_change text, p_at timestamptz) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    IF cardinality(p_users) = 0 THEN
        RETURN;
    END IF;
    INSERT INTO list_changes (project_id, list_id, user_id, change, at)
    SELECT p_project, p_list, u, p_change, p_at FROM unnest(p_users) AS u;
    PERFORM lunogram_on_list_changes(p_project, p_list, p_users, array_fill(p_change, ARRAY[cardinality(p_users)]), p_at);
END
$fn$;

-- Reactions (reactions.py). A merged user's list memberships follow it: the lists the survivor was not in
-- yet it enters (recorded, announced); the merged user's own rows go with it, without exits (it is not
-- leaving anything: it is becoming the survivor). Then every rule list re-evaluates the survivor (its
-- history and memberships grew too), in the lists loop.
CREATE OR REPLACE FUNCTION lunogram_lists_on_user_merged(p_project uuid, p_survivor uuid, p_merged uuid)
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    v_list uuid;
BEGIN
    FOR v_list IN
        WITH moved AS (
            INSERT INTO list_members (list_id, user_id, project_id, created_at)
            SELECT list_id, p_survivor, project_id, created_at FROM list_members WHERE user_id = p_merged
            ON CONFLICT DO NOTHING
            RETURNING list_id
        )
        SELECT list_id FROM moved ORDER BY list_id
    LOOP
        PERFORM lunogram_list_record(p_project, v_list, ARRAY[p_survivor], 'entered', now());
    END LOOP;
    INSERT INTO list_pending_users (project_id, user_id, everything)
    SELECT p_project, p_survivor, true
    WHERE EXISTS (SELECT 1 FROM lists WHERE project_id = p_project AND kind = 'rule')
    ON CONFLICT (user_id) DO UPDATE SET everything = true;
END
$fn$;

-- Deleted users leave their lists (the memberships go with the rows): record and announce the exits.
CREATE OR REPLACE FUNCTION lunogram_lists_on_users_deleted(p_project uuid, p_users uuid[])
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    v_list uuid;
    v_users uuid[];
BEGIN
    FOR v_list, v_users IN
        SELECT list_id, array_agg(user_id ORDER BY user_id) FROM list_members
        WHERE user_id = ANY (p_users) GROUP BY list_id ORDER BY list_id
    LOOP
        PERFORM lunogram_list_record(p_project, v_list, v_users, 'exited', now());
    END LOOP;
END
$fn$;
