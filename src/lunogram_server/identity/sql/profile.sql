-- Upsert and delete, one definition for both kinds of profile (a template like resolve.sql: {entity},
-- {entities}, {identifiers}, {columns}: what an upsert may change, {on_change}: a statement run when the
-- profile changed, {deleted}: the reactions dispatcher told of deletes, lunogram_on_users_deleted or
-- lunogram_on_organizations_deleted). Each call is one statement, hence one transaction and one round trip; inside, every
-- statement sees the previous one's writes, which a single multi-CTE statement would not.

-- Upsert: resolve (create / attach / merge), then apply the fields present in p_fields: a field given as
-- null clears it, an omitted one keeps its value, `data` merges into the stored data at the top level.
-- version goes up by one when anything changed, and only then. Returns the API's JSON for the profile.
CREATE OR REPLACE FUNCTION lunogram_upsert_{entity}(p_project uuid, p_identifiers jsonb, p_fields jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $fn$
DECLARE
    v_id uuid;
    v_changed boolean := false;
    v_created boolean;
    v_old {entities}%ROWTYPE;
    v_new {entities}%ROWTYPE;
BEGIN
    -- Fast path, most upserts: one identifier without metadata, naming a known profile. Locking its row is
    -- enough: a concurrent merge or delete that removes it makes this find nothing, and full resolution
    -- (identifier locks, create, merge) takes over.
    IF jsonb_array_length(p_identifiers) = 1 AND NOT (p_identifiers -> 0) ? 'metadata' THEN
        SELECT * INTO v_old FROM {entities}
        WHERE id = (SELECT y.{entity}_id FROM {identifiers} AS y
                    WHERE y.project_id = p_project AND y.source = p_identifiers -> 0 ->> 'source'
                      AND y.external_id = p_identifiers -> 0 ->> 'external_id')
        FOR NO KEY UPDATE;
    END IF;
    IF v_old.id IS NULL THEN
        SELECT entity_id, changed, created INTO v_id, v_changed, v_created
        FROM lunogram_resolve_{entity}(p_project, p_identifiers, true, p_fields);
        IF v_created THEN  -- with p_fields: nothing left to apply
            {on_change};
            RETURN lunogram_{entity}_json(v_id);
        END IF;
        SELECT * INTO v_old FROM {entities} WHERE id = v_id FOR NO KEY UPDATE;
    ELSE
        v_id := v_old.id;
    END IF;

    -- p_fields holds only the model's own fields (see the *Upsert* request models), so populating the row
    -- from it can only touch those columns
    v_new := jsonb_populate_record(v_old, p_fields - 'data');
    IF jsonb_typeof(p_fields -> 'data') = 'object' THEN
        v_new.data := v_old.data || (p_fields -> 'data');
    END IF;

    IF v_changed OR v_new IS DISTINCT FROM v_old THEN
        v_new.version := v_old.version + 1;
        v_new.updated_at := now();
        UPDATE {entities} SET ({columns}) = (SELECT {columns} FROM (SELECT (v_new).*) AS n) WHERE id = v_id;
        {on_change};
    END IF;
    RETURN lunogram_{entity}_json(v_id);
END
$fn$;

-- Delete every profile the identifiers name; returns how many were deleted (0 -> 404).
CREATE OR REPLACE FUNCTION lunogram_delete_{entity}(p_project uuid, p_identifiers jsonb)
RETURNS integer LANGUAGE plpgsql AS $fn$
DECLARE
    v_ids uuid[];
    v_seen uuid[];
    v_count integer;
    v_total integer := 0;
BEGIN
    -- two statements: the DELETE must take its snapshot after resolve has waited for the identifier locks.
    -- A profile merged away while the DELETE waited for it is gone, its identifiers now the survivor's: so
    -- resolve again until the identifiers name no one (after a successful DELETE that is at once).
    LOOP
        v_ids := ARRAY(SELECT entity_id FROM lunogram_resolve_{entity}(p_project, p_identifiers, false) ORDER BY 1);
        EXIT WHEN cardinality(v_ids) = 0 OR v_ids = v_seen;
        v_seen := v_ids;
        -- lock them first: the other domains are told while the rows still exist, and only of rows that go
        v_ids := ARRAY(SELECT id FROM {entities} WHERE project_id = p_project AND id = ANY (v_ids) ORDER BY id FOR UPDATE);
        IF cardinality(v_ids) > 0 THEN
            PERFORM {deleted}(p_project, v_ids);
        END IF;
        DELETE FROM {entities} WHERE project_id = p_project AND id = ANY (v_ids);
        GET DIAGNOSTICS v_count = ROW_COUNT;
        v_total := v_total + v_count;
    END LOOP;
    RETURN v_total;
END
$fn$;

-- An upsert under an Idempotency-Key (http/idempotency.py has the rules), in one call so that keyed upserts
-- can be committed together like the others (db/coalesce.py): the first call with a key upserts and stores
-- its answer; a repeat gets the stored answer; another request under the key gets status 409. Returns
-- an object with status and body (the profile JSON as text, or null for the 409).
CREATE OR REPLACE FUNCTION lunogram_keyed_upsert_{entity}(
    p_project uuid, p_key text, p_hash text, p_identifiers jsonb, p_fields jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $fn$
DECLARE
    v_hash bytea := decode(p_hash, 'hex');
    v_stored idempotency_keys%ROWTYPE;
    v_body jsonb;
BEGIN
    DELETE FROM idempotency_keys
    WHERE project_id = p_project AND key = p_key AND created_at < now() - interval '24 hours';
    INSERT INTO idempotency_keys (project_id, key, request_hash, status, body)
    VALUES (p_project, p_key, v_hash, 0, '')
    ON CONFLICT (project_id, key) DO NOTHING;
    IF NOT FOUND THEN
        SELECT * INTO v_stored FROM idempotency_keys WHERE project_id = p_project AND key = p_key;
        IF v_stored.request_hash <> v_hash THEN
            RETURN jsonb_build_object('status', 409, 'body', NULL);
        END IF;
        RETURN jsonb_build_object('status', v_stored.status, 'body', convert_from(v_stored.body, 'UTF8'));
    END IF;
    v_body := lunogram_upsert_{entity}(p_project, p_identifiers, p_fields);
    UPDATE idempotency_keys SET status = 200, body = convert_to(v_body::text, 'UTF8'),
                                content_type = 'application/json'
    WHERE project_id = p_project AND key = p_key;
    RETURN jsonb_build_object('status', 200, 'body', v_body::text);
END
$fn$;
