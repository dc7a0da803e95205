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
-- contact fields the survivor lacks, organization memberships (the survivor's membership data wins).
-- Each merge is recorded in user_merges. Later features that hang rows on a user move them here too.
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

        -- Event history follows the profile; an event both received (one broadcast) is kept once.
        DELETE FROM user_events AS l
        WHERE l.user_id = v_loser.id
          AND EXISTS (SELECT 1 FROM user_events AS s WHERE s.inbox_id = l.inbox_id AND s.user_id = p_survivor);
        UPDATE user_events SET user_id = p_survivor WHERE user_id = v_loser.id;

        -- Schedules follow the profile; on a name clash the survivor's own schedule wins.
        DELETE FROM schedules AS l
        WHERE l.user_id = v_loser.id
          AND EXISTS (SELECT 1 FROM schedules AS s WHERE s.user_id = p_survivor AND s.name = l.name);
        UPDATE schedules SET user_id = p_survivor, updated_at = now() WHERE user_id = v_loser.id;

        -- List memberships follow the profile (the loser's own rows go with it below).
        INSERT INTO list_members (list_id, user_id, project_id, created_at)
        SELECT list_id, p_survivor, project_id, created_at FROM list_members WHERE user_id = v_loser.id
        ON CONFLICT DO NOTHING;

        -- Lock what the copy reads, organizations first, then the memberships: a concurrent delete of one of
        -- those organizations or removal of one of those memberships then either commits first (and the copy
        -- skips it, instead of failing on the foreign key or bringing it back) or waits for the merge.
        PERFORM 1 FROM organizations AS o
        WHERE o.id IN (SELECT m.organization_id FROM organization_members AS m WHERE m.user_id = v_loser.id)
        ORDER BY o.id FOR KEY SHARE;
        PERFORM 1 FROM organization_members AS m WHERE m.user_id = v_loser.id ORDER BY m.organization_id FOR UPDATE;
        INSERT INTO organization_members (project_id, organization_id, user_id, data, created_at, updated_at)
        SELECT project_id, organization_id, p_survivor, data, created_at, now()
        FROM organization_members WHERE user_id = v_loser.id
        ON CONFLICT (organization_id, user_id) DO UPDATE
            SET data = excluded.data || organization_members.data, updated_at = now();

        UPDATE users AS s SET
            data = v_loser.data || s.data,
            email = coalesce(s.email, v_loser.email),
            phone = coalesce(s.phone, v_loser.phone),
            timezone = coalesce(s.timezone, v_loser.timezone),
            locale = coalesce(s.locale, v_loser.locale),
            has_push_device = s.has_push_device OR v_loser.has_push_device,
            created_at = least(s.created_at, v_loser.created_at),
            version = s.version + 1,
            updated_at = now()
        WHERE s.id = p_survivor;

        DELETE FROM users WHERE id = v_loser.id;
    END LOOP;
    PERFORM lunogram_lists_user_merged(p_project, p_survivor);
END
$fn$;

