-- Upsert and delete, one definition for both kinds of profile (a template like resolve.sql: {entity},
-- {entities}, {identifiers}, {columns}: what an upsert may change, {on_change}: a statement run when the
-- profile changed, {deleted}: the reactions dispatcher told of deletes, lunogram_on_users_deleted or
-- lunogram_on_organizations_deleted). Each call is one statement, hence one transaction and one round trip; inside, every
-- statement sees the previous one's writes, which a single multi-CTE statement would not.

-- What a public key's upsert answers (docs/api.md "Public keys"): the API's shape, but nothing stored
-- that the request did not send: the profile's id, project and version and its timestamps, the identifiers
-- sent (with their ids and timestamps, and the metadata sent), the fields sent that have a value (a field
-- without a value is omitted, as in the full answer), `data` as sent. Built from the request, so it costs
-- less than the full answer: no stored data, no other identifiers are read.
CREATE OR REPLACE FUNCTION lunogram_{entity}_public_json(p_id uuid, p_identifiers jsonb, p_fields jsonb)
RETURNS jsonb LANGUAGE sql STABLE AS $fn$
    SELECT jsonb_build_object(
        'id', e.id,
        'project_id', e.project_id,
        'identifier', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'id', y.id, 'source', y.source, 'external_id', y.external_id,
                       'metadata', coalesce(s.value -> 'metadata', jsonb_build_object()),
                       'created_at', y.created_at, 'updated_at', y.updated_at)
                   ORDER BY y.created_at, y.id)
            FROM jsonb_array_elements(p_identifiers) AS s,
                 LATERAL (SELECT * FROM {identifiers} AS x
                          WHERE x.project_id = e.project_id AND x.source = s.value ->> 'source'
                            AND x.external_id = s.value ->> 'external_id' AND x.{entity}_id = e.id
                          OFFSET 0) AS y), '[]'::jsonb),
        'data', CASE WHEN jsonb_typeof(p_fields -> 'data') = 'object' THEN p_fields -> 'data'
                     ELSE jsonb_build_object() END,
        'version', e.version,
        'created_at', e.created_at,
        'updated_at', e.updated_at)
        || jsonb_strip_nulls(coalesce(p_fields, jsonb_build_object()) - 'data')
    FROM {entities} AS e WHERE e.id = p_id
$fn$;

-- Upsert: resolve (create / attach / merge), then apply the fields present in p_fields: a field given as
-- null clears it, an omitted one keeps its value, `data` merges into the stored data at the top level
-- (refused, 22LN1, when the merged data would exceed LUNOGRAM_MAX_PROFILE_DATA_BYTES). version goes up by
-- one when anything changed, and only then. Returns the API's JSON for the profile; for a public key's
-- upsert (p_public) what lunogram_{entity}_public_json answers, and a merge only as resolve allows it.
CREATE OR REPLACE FUNCTION lunogram_upsert_{entity}(
    p_project uuid, p_identifiers jsonb, p_fields jsonb, p_public boolean)
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
        FROM lunogram_resolve_{entity}(p_project, p_identifiers, true, p_fields, p_public);
        IF v_created THEN  -- with p_fields: nothing left to apply
            {on_change};
            RETURN CASE WHEN p_public THEN lunogram_{entity}_public_json(v_id, p_identifiers, p_fields)
                        ELSE lunogram_{entity}_json(v_id) END;
        END IF;
        SELECT * INTO v_old FROM {entities} WHERE id = v_id FOR NO KEY UPDATE;
    ELSE
        v_id := v_old.id;
    END IF;

    -- p_fields holds only the model's own fields (see the *Upsert* request models), so populating the row
    -- from it can only touch those columns
    v_new := jsonb_populate_record(v_old, p_fields - 'data');
    IF jsonb_typeof(p_fields -> 'data') = 'object' THEN
        v_new.data := lunogram_checked_data(v_old.data || (p_fields -> 'data'), 'data');
    END IF;

    IF v_changed OR v_new IS DISTINCT FROM v_old THEN
        v_new.version := v_old.version + 1;
        v_new.updated_at := now();
        UPDATE {entities} SET ({columns}) = (SELECT {columns} FROM (SELECT (v_new).*) AS n) WHERE id = v_id;
        {on_change};
    END IF;
    RETURN CASE WHEN p_public THEN lunogram_{entity}_public_json(v_id, p_identifiers, p_fields)
                ELSE lunogram_{entity}_json(v_id) END;
END
$fn$;

-- The same for the callers that are not a public key's upsert (CSV imports).
CREATE OR REPLACE FUNCTION lunogram_upsert_{entity}(p_project uuid, p_identifiers jsonb, p_fields jsonb)
RETURNS jsonb LANGUAGE sql AS $fn$
    SELECT lunogram_upsert_{entity}(p_project, p_identifiers, p_fields, false)
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
-- its answer; a repeat gets the stored answer; another request under the key gets status 409. Returns an
-- object with status and body (the profile JSON as text, or null for the 409), or with status and problem
-- (the detail of a 4xx): a refused upsert (limits.sql) releases its key, a refusal is not remembered; a
-- repeat whose profile no longer exists (deleted, or merged into another, since) answers 404 rather than
-- what was stored about it. p_key is already scoped to the API key that sent it (http/idempotency.py).
CREATE OR REPLACE FUNCTION lunogram_keyed_upsert_{entity}(
    p_project uuid, p_key text, p_hash text, p_identifiers jsonb, p_fields jsonb, p_public boolean)
RETURNS jsonb LANGUAGE plpgsql AS $fn$
DECLARE
    v_hash bytea := decode(p_hash, 'hex');
    v_stored idempotency_keys%ROWTYPE;
    v_id uuid;
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
        IF v_stored.status = 200 THEN
            v_id := (convert_from(v_stored.body, 'UTF8')::jsonb ->> 'id')::uuid;
            IF NOT EXISTS (SELECT 1 FROM {entities} WHERE id = v_id) THEN
                RETURN jsonb_build_object('status', 404, 'problem', format(
                    'Idempotency-Key: the %s this key''s request wrote (%s) no longer exists: it was deleted or '
                    'merged into another since; send the request again under a new key', '{entity}', v_id));
            END IF;
        END IF;
        RETURN jsonb_build_object('status', v_stored.status, 'body', convert_from(v_stored.body, 'UTF8'));
    END IF;
    BEGIN
        v_body := lunogram_upsert_{entity}(p_project, p_identifiers, p_fields, p_public);
    EXCEPTION WHEN SQLSTATE '22LN1' OR SQLSTATE '42LN3' THEN
        DELETE FROM idempotency_keys WHERE project_id = p_project AND key = p_key;
        RETURN lunogram_refusal_answer(SQLSTATE, SQLERRM);
    END;
    UPDATE idempotency_keys SET status = 200, body = convert_to(v_body::text, 'UTF8'),
                                content_type = 'application/json'
    WHERE project_id = p_project AND key = p_key;
    RETURN jsonb_build_object('status', 200, 'body', v_body::text);
END
$fn$;
