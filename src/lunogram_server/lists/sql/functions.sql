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

-- Queue a merge's survivor for every rule list of the project (its history and memberships grew too).
CREATE OR REPLACE FUNCTION lunogram_lists_user_merged(p_project uuid, p_user uuid) RETURNS void
LANGUAGE sql AS $fn$
    INSERT INTO list_pending_users (project_id, user_id, everything)
    SELECT p_project, p_user, true
    WHERE EXISTS (SELECT 1 FROM lists WHERE project_id = p_project AND kind = 'rule')
    ON CONFLICT (user_id) DO UPDATE SET everything = true
$fn$;

-- Add users to a list (static lists: by hand, by import), recording each entry; how many entered.
CREATE OR REPLACE FUNCTION lunogram_list_add(p_project uuid, p_list uuid, p_users uuid[]) RETURNS bigint
LANGUAGE sql AS $fn$
    WITH added AS (
        INSERT INTO list_members (list_id, user_id, project_id)
        SELECT p_list, u, p_project FROM unnest(p_users) AS u
        ON CONFLICT DO NOTHING
        RETURNING user_id
    ), recorded AS (
        INSERT INTO list_changes (project_id, list_id, user_id, change)
        SELECT p_project, p_list, user_id, 'entered' FROM added
    )
    SELECT count(*) FROM added
$fn$;
