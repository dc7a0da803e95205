-- Lists: called by the user upsert (identity/sql/profile.sql) when a profile changed. Installed at every migrate.

-- Queue the user for re-evaluation, only when some rule list of the project looks at profiles.
CREATE OR REPLACE FUNCTION lunogram_lists_user_changed(p_project uuid, p_user uuid) RETURNS void
LANGUAGE sql AS $fn$
    INSERT INTO list_pending_users (project_id, user_id)
    SELECT p_project, p_user
    WHERE EXISTS (SELECT 1 FROM lists WHERE project_id = p_project AND uses_profile)
    ON CONFLICT (user_id) DO NOTHING
$fn$;
