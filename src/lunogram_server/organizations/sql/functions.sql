-- Organizations and memberships: merge, add/remove member, the API's JSON (upsert, delete: identity/sql).
-- Installed (CREATE OR REPLACE) at every migrate; see users/sql/functions.sql for the conventions.

-- The Organization object of the Client API (docs/api.md "Responses"): `name` is left out when unset, never null.
CREATE OR REPLACE FUNCTION lunogram_organization_json(p_org uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $fn$
    SELECT jsonb_strip_nulls(jsonb_build_object('name', o.name)) || jsonb_build_object(
        'id', o.id,
        'project_id', o.project_id,
        'identifier', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'id', i.id, 'source', i.source, 'external_id', i.external_id,
                       'metadata', i.metadata, 'created_at', i.created_at, 'updated_at', i.updated_at)
                   ORDER BY i.created_at, i.id)
            FROM organization_identifiers AS i WHERE i.organization_id = o.id), '[]'::jsonb),
        'data', o.data,
        'version', o.version,
        'created_at', o.created_at,
        'updated_at', o.updated_at)
    FROM organizations AS o WHERE o.id = p_org
$fn$;

-- Fold p_losers into p_survivor: identifiers, data (survivor's keys win), name, memberships. Never refused,
-- never past the data cap: see lunogram_merge_users. Each merge is recorded in organization_merges; other
-- domains move what they hang on an organization when lunogram_on_organization_merged (reactions.py) calls
-- them, before the merged row goes.
CREATE OR REPLACE FUNCTION lunogram_merge_organizations(p_project uuid, p_survivor uuid, p_losers uuid[])
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    v_loser organizations%ROWTYPE;
BEGIN
    FOR v_loser IN
        SELECT * FROM organizations WHERE id = ANY (p_losers) AND project_id = p_project
        ORDER BY created_at, id
        FOR UPDATE
    LOOP
        INSERT INTO organization_merges (project_id, survivor_id, merged_id, identifiers, data)
        VALUES (p_project, p_survivor, v_loser.id,
                coalesce((SELECT jsonb_agg(jsonb_build_object('source', source, 'external_id', external_id))
                          FROM organization_identifiers WHERE organization_id = v_loser.id), '[]'::jsonb),
                v_loser.data);

        UPDATE organization_identifiers SET organization_id = p_survivor, updated_at = now()
        WHERE organization_id = v_loser.id;

        -- Lock what the copy reads, users first, then the memberships (see lunogram_organizations_on_user_merged).
        PERFORM 1 FROM users AS u
        WHERE u.id IN (SELECT m.user_id FROM organization_members AS m WHERE m.organization_id = v_loser.id)
        ORDER BY u.id FOR KEY SHARE;
        PERFORM 1 FROM organization_members AS m WHERE m.organization_id = v_loser.id ORDER BY m.user_id FOR UPDATE;
        INSERT INTO organization_members (project_id, organization_id, user_id, data, created_at, updated_at)
        SELECT project_id, p_survivor, user_id, data, created_at, now()
        FROM organization_members WHERE organization_id = v_loser.id
        ON CONFLICT (organization_id, user_id) DO UPDATE
            SET data = CASE WHEN pg_column_size(excluded.data || organization_members.data)
                                 <= lunogram_max_profile_data_bytes()
                            THEN excluded.data || organization_members.data ELSE organization_members.data END,
                updated_at = now();

        UPDATE organizations AS s SET
            data = CASE WHEN pg_column_size(v_loser.data || s.data) <= lunogram_max_profile_data_bytes()
                        THEN v_loser.data || s.data ELSE s.data END,
            name = coalesce(s.name, v_loser.name),
            created_at = least(s.created_at, v_loser.created_at),
            version = s.version + 1,
            updated_at = now()
        WHERE s.id = p_survivor;

        PERFORM lunogram_on_organization_merged(p_project, p_survivor, v_loser.id);
        DELETE FROM organizations WHERE id = v_loser.id;
    END LOOP;
END
$fn$;

-- Reactions (reactions.py): a merged user's memberships follow it (the survivor's membership data wins).
-- Lock what the copy reads, organizations first, then the memberships: a concurrent delete of one of those
-- organizations or removal of one of those memberships then either commits first (and the copy skips it,
-- instead of failing on the foreign key or bringing it back) or waits for the merge.
CREATE OR REPLACE FUNCTION lunogram_organizations_on_user_merged(p_project uuid, p_survivor uuid, p_merged uuid)
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM 1 FROM organizations AS o
    WHERE o.id IN (SELECT m.organization_id FROM organization_members AS m WHERE m.user_id = p_merged)
    ORDER BY o.id FOR KEY SHARE;
    PERFORM 1 FROM organization_members AS m WHERE m.user_id = p_merged ORDER BY m.organization_id FOR UPDATE;
    INSERT INTO organization_members (project_id, organization_id, user_id, data, created_at, updated_at)
    SELECT project_id, organization_id, p_survivor, data, created_at, now()
    FROM organization_members WHERE user_id = p_merged
    ON CONFLICT (organization_id, user_id) DO UPDATE
        SET data = CASE WHEN pg_column_size(excluded.data || organization_members.data)
                             <= lunogram_max_profile_data_bytes()
                        THEN excluded.data || organization_members.data ELSE organization_members.data END,
            updated_at = now();
END
$fn$;

-- Add (or update) a membership; a user or organization that does not exist yet is created, so nothing
-- sent is dropped. Membership data merges at the top level like profile data, under the same cap
-- (identity/sql/limits.sql: refused, 22LN1, when the merged data would exceed it).
CREATE OR REPLACE FUNCTION lunogram_add_member(
    p_project uuid, p_org_identifiers jsonb, p_user_identifiers jsonb, p_data jsonb)
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    v_org uuid;
    v_user uuid;
BEGIN
    SELECT entity_id INTO v_org FROM lunogram_resolve_organization(p_project, p_org_identifiers, true);
    SELECT entity_id INTO v_user FROM lunogram_resolve_user(p_project, p_user_identifiers, true);
    INSERT INTO organization_members AS m (project_id, organization_id, user_id, data)
    VALUES (p_project, v_org, v_user, lunogram_checked_data(coalesce(p_data, jsonb_build_object()), 'data'))
    ON CONFLICT (organization_id, user_id) DO UPDATE
        SET data = lunogram_checked_data(m.data || excluded.data, 'data'), updated_at = now();
END
$fn$;

-- Remove a membership. Returns 'removed', or what was missing: 'organization', 'user' or 'membership'.
CREATE OR REPLACE FUNCTION lunogram_remove_member(
    p_project uuid, p_org_identifiers jsonb, p_user_identifiers jsonb)
RETURNS text LANGUAGE plpgsql AS $fn$
DECLARE
    v_orgs uuid[];
    v_users uuid[];
    v_seen uuid[];
    v_count integer;
BEGIN
    -- a membership moved by a merge while the DELETE waited for it is found again under the survivor
    LOOP
        v_orgs := ARRAY(
            SELECT entity_id FROM lunogram_resolve_organization(p_project, p_org_identifiers, false) ORDER BY 1);
        IF cardinality(v_orgs) = 0 THEN RETURN 'organization'; END IF;
        v_users := ARRAY(SELECT entity_id FROM lunogram_resolve_user(p_project, p_user_identifiers, false) ORDER BY 1);
        IF cardinality(v_users) = 0 THEN RETURN 'user'; END IF;
        EXIT WHEN v_orgs || v_users = v_seen;
        v_seen := v_orgs || v_users;
        DELETE FROM organization_members
        WHERE organization_id = ANY (v_orgs) AND user_id = ANY (v_users);
        GET DIAGNOSTICS v_count = ROW_COUNT;
        IF v_count > 0 THEN RETURN 'removed'; END IF;
    END LOOP;
    RETURN 'membership';
END
$fn$;
