-- Identity resolution, one definition for both kinds of profile.
-- This file is a template: {entity} is `user` or `organization`, {entities} the table, {identifiers} the
-- identifier table, {merge} the kind's merge function, {settable} the columns an upsert sets. (No literal
-- braces below this line.)
--
-- lunogram_resolve_{entity}(project, identifiers, create, fields, public) -> (entity_id, changed, created),
-- lunogram_resolve_{entity}(project, identifiers, create, fields) (public false), and
-- lunogram_resolve_{entity}(project, identifiers, create) -> (entity_id, changed)
--   identifiers: jsonb array of normalised ExternalIDs (source, external_id, metadata), deduplicated.
--   create = true  (writes): match no one -> create with all identifiers; one -> attach missing identifiers
--                  and merge metadata; several -> merge them into one survivor, then attach.
--   create = false (lookups, deletes): return every matching profile, change nothing.
--   fields (upserts): a profile created here is created with them, so the upsert need not update it.
--   public (a public key's upsert): a merge is allowed only when every profile but one is anonymous-only
--                  (all its identifiers of source `anonymous`: a browser's identify); otherwise error 42LN3,
--                  before anything is written.
-- Data and identifier metadata are checked against LUNOGRAM_MAX_PROFILE_DATA_BYTES (limits.sql, 22LN1).
-- Concurrency: transaction-scoped advisory locks on every identifier, taken in a fixed order, serialise
-- resolutions that share an identifier, so fifty concurrent upserts of one new identifier create one
-- profile; the unique (project_id, source, external_id) constraint is the backstop. Writes also lock the
-- matched profile rows (FOR NO KEY UPDATE), so no concurrent merge can delete a profile they are changing.
CREATE OR REPLACE FUNCTION lunogram_resolve_{entity}(
    p_project uuid, p_identifiers jsonb, p_create boolean, p_fields jsonb, p_public boolean)
RETURNS TABLE (entity_id uuid, changed boolean, created boolean)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_ids uuid[];
    v_survivor uuid;
    v_changed boolean := false;
    v_created boolean := false;
    v_count integer;
BEGIN
    PERFORM pg_advisory_xact_lock(k.h)
    FROM (
        SELECT DISTINCT hashtextextended(
            p_project::text || ':{entity}:' || (i ->> 'source') || ':' || (i ->> 'external_id'), 0) AS h
        FROM jsonb_array_elements(p_identifiers) AS i
        ORDER BY 1
    ) AS k;

    -- LATERAL with OFFSET 0 (which stops the planner flattening it into a join) keeps this an index probe
    -- per identifier whatever the statistics say: a hash join over all of a project's identifiers, which
    -- stale statistics produce, costs milliseconds
    LOOP
        SELECT array_agg(DISTINCT x.{entity}_id ORDER BY x.{entity}_id) INTO v_ids
        FROM jsonb_array_elements(p_identifiers) AS i,
             LATERAL (SELECT y.{entity}_id FROM {identifiers} AS y
                      WHERE y.project_id = p_project AND y.source = i ->> 'source'
                        AND y.external_id = i ->> 'external_id' OFFSET 0) AS x;
        EXIT WHEN NOT p_create OR v_ids IS NULL;
        -- The advisory locks cover the identifiers named here, not the other identifiers of the profiles
        -- they match, so a concurrent resolution through those may merge one of our profiles away. Lock
        -- the profiles (in id order: resolutions cannot deadlock on them), then check that the identifiers
        -- still point at exactly them; if a merge committed meanwhile and moved them, resolve again.
        PERFORM 1 FROM {entities} AS e WHERE e.id = ANY (v_ids) ORDER BY e.id FOR NO KEY UPDATE;
        EXIT WHEN v_ids = ARRAY(
            SELECT DISTINCT x.{entity}_id
            FROM jsonb_array_elements(p_identifiers) AS i,
                 LATERAL (SELECT y.{entity}_id FROM {identifiers} AS y
                          WHERE y.project_id = p_project AND y.source = i ->> 'source'
                            AND y.external_id = i ->> 'external_id' OFFSET 0) AS x
            ORDER BY 1);
    END LOOP;

    IF NOT p_create THEN
        RETURN QUERY SELECT u.id, false, false FROM unnest(v_ids) AS u(id);
        RETURN;
    END IF;

    IF v_ids IS NULL THEN
        -- `data` only as an object (null or absent: empty); the other fields as given
        INSERT INTO {entities} (project_id, {settable})
        SELECT p_project, {settable}
        FROM jsonb_populate_record(NULL::{entities}, coalesce(p_fields, jsonb_build_object()) - 'data' || jsonb_build_object(
                 'data', CASE WHEN jsonb_typeof(p_fields -> 'data') = 'object'
                              THEN lunogram_checked_data(p_fields -> 'data', 'data')
                              ELSE jsonb_build_object() END))
        RETURNING id INTO v_survivor;
        v_changed := true;
        v_created := true;
    ELSIF cardinality(v_ids) = 1 THEN
        v_survivor := v_ids[1];
    ELSE
        IF p_public THEN
            SELECT count(*) INTO v_count FROM {entities} AS e
            WHERE e.id = ANY (v_ids)
              AND EXISTS (SELECT 1 FROM {identifiers} AS a WHERE a.{entity}_id = e.id AND a.source <> 'anonymous');
            IF v_count > 1 THEN
                RAISE EXCEPTION 'identifier: names % profiles that have identifiers of a source other than "anonymous"; a public key may merge profiles only when all but one of them have only "anonymous" identifiers (merge identified profiles with a secret key)',
                    v_count
                    USING ERRCODE = '42LN3';
            END IF;
        END IF;
        -- Deterministic survivor: a profile with a non-anonymous identifier beats an anonymous-only one;
        -- then the oldest; then the smallest id.
        SELECT e.id INTO v_survivor
        FROM {entities} AS e
        WHERE e.id = ANY (v_ids)
        ORDER BY NOT EXISTS (
                     SELECT 1 FROM {identifiers} AS a
                     WHERE a.{entity}_id = e.id AND a.source <> 'anonymous'),
                 e.created_at, e.id
        LIMIT 1;
        -- One merge at a time per project, users and organizations alike: a user merge and an organization
        -- merge move the same membership rows, and each locks what the other would then need.
        PERFORM pg_advisory_xact_lock(hashtextextended(p_project::text || ':merge', 0));
        PERFORM {merge}(p_project, v_survivor, array_remove(v_ids, v_survivor));
        v_changed := true;
    END IF;

    INSERT INTO {identifiers} AS x (project_id, {entity}_id, source, external_id, metadata)
    SELECT p_project, v_survivor, i ->> 'source', i ->> 'external_id',
           coalesce(lunogram_checked_data(i -> 'metadata', 'identifier.metadata'), jsonb_build_object())
    FROM jsonb_array_elements(p_identifiers) AS i
    ON CONFLICT (project_id, source, external_id) DO UPDATE
        SET metadata = lunogram_checked_data(x.metadata || excluded.metadata, 'identifier.metadata'),
            updated_at = now()
        WHERE x.metadata IS DISTINCT FROM x.metadata || excluded.metadata;
    GET DIAGNOSTICS v_count = ROW_COUNT;

    RETURN QUERY SELECT v_survivor, v_changed OR v_count > 0, v_created;
END
$fn$;

CREATE OR REPLACE FUNCTION lunogram_resolve_{entity}(
    p_project uuid, p_identifiers jsonb, p_create boolean, p_fields jsonb)
RETURNS TABLE (entity_id uuid, changed boolean, created boolean)
LANGUAGE sql AS $fn$
    SELECT * FROM lunogram_resolve_{entity}(p_project, p_identifiers, p_create, p_fields, false)
$fn$;

CREATE OR REPLACE FUNCTION lunogram_resolve_{entity}(p_project uuid, p_identifiers jsonb, p_create boolean)
RETURNS TABLE (entity_id uuid, changed boolean)
LANGUAGE sql AS $fn$
    SELECT entity_id, changed FROM lunogram_resolve_{entity}(p_project, p_identifiers, p_create, NULL, false)
$fn$;
