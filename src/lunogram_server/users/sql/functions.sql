-- Users: merge and the JSON the API returns (upsert and delete: identity/sql/profile.sql).
-- Installed (CREATE OR REPLACE) at every migrate.
-- Each call is one statement, hence one transaction and one round trip; inside, every statement sees the
-- previous one's writes, which a single multi-CTE statement would not.

-- The User object of the Client API (docs/api.md "Responses"). email, phone, timezone and locale are left
-- out when they have no value, never null, as upstream Lunogram's published schemas have them (optional
-- strings). Only those four are stripped: a null inside `data` or `metadata` is the caller's and stays.
CREATE OR REPLACE FUNCTION lunogram_user_json(p_user uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $fn$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'email', u.email, 'phone', u.phone, 'timezone', u.timezone, 'locale', u.locale)) || jsonb_build_object(
        'id', u.id,
        'project_id', u.project_id,
        'identifier', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'id', i.id, 'source', i.source, 'external_id', i.external_id,
                       'metadata', i.metadata, 'created_at', i.created_at, 'updated_at', i.updated_at)
                   ORDER BY i.created_at, i.id)
            FROM user_identifiers AS i WHERE i.user_id = u.id), '[]'::jsonb),
        'data', u.data,
        'has_push_device', u.has_push_device,
        'version', u.version,
        'created_at', u.created_at,
        'updated_at', u.updated_at)
    FROM users AS u WHERE u.id = p_user
$fn$;

-- Fold p_losers into p_survivor: identifiers, data (the survivor's keys win, then older losers' over newer),
-- contact fields the survivor lacks. Each merge is recorded in user_merges. What other domains hang on a
-- user (event history, memberships, schedules, list memberships, journey runs) is theirs to move: they
-- subscribe to lunogram_on_user_merged (reactions.py), called before the merged row goes.
-- A merge is never refused (it is what the identifiers say), and never grows data past its cap
-- (identity/sql/limits.sql): when a loser's data merged into the survivor's would exceed it, the survivor
-- keeps its own; the loser's is kept whole in user_merges.
CREATE OR REPLACE FUNCTION lunogram_merge_users(p_project uuid, p_survivor uuid, p_losers uuid[])
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    v_loser users%ROWTYPE;
BEGIN
    FOR v_loser IN
        SELECT * FROM users WHERE id = ANY (p_losers) AND project_id = p_project
        ORDER BY created_at, id
        FOR UPDATE
    LOOP
        INSERT INTO user_merges (project_id, survivor_id, merged_id, identifiers, data)
        VALUES (p_project, p_survivor, v_loser.id,
                coalesce((SELECT jsonb_agg(jsonb_build_object('source', source, 'external_id', external_id))
                          FROM user_identifiers WHERE user_id = v_loser.id), '[]'::jsonb),
                v_loser.data);

        UPDATE user_identifiers SET user_id = p_survivor, updated_at = now() WHERE user_id = v_loser.id;

        UPDATE users AS s SET
            data = CASE WHEN pg_column_size(v_loser.data || s.data) <= lunogram_max_profile_data_bytes()
                        THEN v_loser.data || s.data ELSE s.data END,
            email = coalesce(s.email, v_loser.email),
            phone = coalesce(s.phone, v_loser.phone),
            timezone = coalesce(s.timezone, v_loser.timezone),
            locale = coalesce(s.locale, v_loser.locale),
            has_push_device = s.has_push_device OR v_loser.has_push_device,
            created_at = least(s.created_at, v_loser.created_at),
            version = s.version + 1,
            updated_at = now()
        WHERE s.id = p_survivor;

        PERFORM lunogram_on_user_merged(p_project, p_survivor, v_loser.id);
        DELETE FROM users WHERE id = v_loser.id;
    END LOOP;
END
$fn$;
