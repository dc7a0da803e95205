-- Many upserts in one call, as db/coalesce.py commits them together (a template like profile.sql; also
-- {on_change_many}: a statement run for the profiles v_changed of the projects v_changed_projects).
--
-- p_items is a JSON array of [project, identifiers, fields, public?], the arguments of
-- lunogram_upsert_{entity} (public: a public key's upsert, false when absent); the result is each item's
-- answer in item order: the profile's JSON as text, or a refusal [status, detail] (limits.sql: data over
-- its cap, a merge a public key may not make), which changed nothing and leaves the other items done.
--
-- Why: inside a function each statement costs tens of microseconds to start, as much as the work of a
-- one-row upsert, and an upsert through lunogram_upsert_{entity} runs eight or so. The common items, one
-- identifier without metadata that names a known profile or no one yet, are done here for the whole batch
-- in a handful of statements. The others (several identifiers, metadata, merges, an identifier or a
-- profile named by two items of the batch, a profile created or merged away meanwhile) go one by one
-- through lunogram_upsert_{entity} afterwards. The items of a batch are concurrent requests, so running
-- them in this order is as valid as running them in any other. The rules are those of profile.sql and
-- resolve.sql: profile rows locked in id order, a profile created only under its identifier's advisory
-- lock, after checking again under it that the identifier still names no one.
--
-- Generic plans: the statements' plans do not depend on the values, and planning them afresh on each call
-- (which PostgreSQL does for array parameters, whose custom plans look cheaper) costs more than running them.
CREATE OR REPLACE FUNCTION lunogram_upsert_{entities}(p_items jsonb)
RETURNS SETOF text LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $fn$
DECLARE
    v_n bigint[];          -- the simple items: one identifier without metadata
    v_project uuid[];
    v_source text[];
    v_external text[];
    v_fields jsonb[];
    v_done bigint[];       -- items answered by the set path, and their profiles
    v_ids uuid[];
    v_fresh bigint[];      -- simple items naming no one: created here
    v_changed uuid[];      -- profiles changed or created here, and their projects
    v_changed_projects uuid[];
    v_answers text[] := array_fill(NULL::text, ARRAY[jsonb_array_length(p_items)]);
    v_item record;
    v_max integer := lunogram_max_profile_data_bytes();
BEGIN
    SELECT array_agg(t.n), array_agg((t.item ->> 0)::uuid), array_agg(t.item -> 1 -> 0 ->> 'source'),
           array_agg(t.item -> 1 -> 0 ->> 'external_id'), array_agg(t.item -> 2)
    INTO v_n, v_project, v_source, v_external, v_fields
    FROM jsonb_array_elements(p_items) WITH ORDINALITY AS t(item, n)
    WHERE jsonb_array_length(t.item -> 1) = 1 AND NOT (t.item -> 1 -> 0) ? 'metadata';

    -- Every lookup below is an index probe per item (LATERAL ... OFFSET 0 and scalar subqueries are not
    -- turned into joins): plans are made once (generic) and must not depend on the tables' statistics,
    -- which say "empty" on a new database.

    -- Known profiles: lock them in id order, apply the fields (null clears, omitted keeps, data merges at
    -- the top level), count a version only when something changed. A profile named by two items is done
    -- here for the first only. A profile merged away or deleted while we waited for its lock is not
    -- returned by the lock, and its item goes one by one; so does an item whose merged data would exceed
    -- the cap (limits.sql), to be refused there.
    WITH named AS (
        SELECT DISTINCT ON (y.id) s.n, y.id, s.fields
        FROM unnest(v_n, v_project, v_source, v_external, v_fields) AS s(n, project, source, external_id, fields),
             LATERAL (SELECT x.{entity}_id AS id FROM {identifiers} AS x
                      WHERE x.project_id = s.project AND x.source = s.source AND x.external_id = s.external_id
                      OFFSET 0) AS y
        ORDER BY y.id, s.n
    ), locked AS (
        SELECT named.n, l.old, named.fields,
               CASE WHEN jsonb_typeof(named.fields -> 'data') = 'object'
                    THEN (l.old).data || (named.fields -> 'data') END AS data
        FROM named, LATERAL (SELECT e AS old FROM {entities} AS e WHERE e.id = named.id FOR NO KEY UPDATE) AS l
    ), applied AS (
        SELECT l.n, l.old, jsonb_populate_record(l.old, (l.fields - 'data') || CASE
                   WHEN l.data IS NOT NULL THEN jsonb_build_object('data', l.data)
                   ELSE jsonb_build_object() END) AS new
        FROM locked AS l
        WHERE l.data IS NULL OR pg_column_size(l.data) <= v_max
    ), updated AS (
        UPDATE {entities} AS e
        SET ({settable}) = (SELECT {settable} FROM (SELECT (a.new).*) AS x),
            version = e.version + 1, updated_at = now()
        FROM applied AS a
        WHERE e.id = (a.old).id AND a.new IS DISTINCT FROM a.old
        RETURNING e.id, e.project_id
    )
    SELECT (SELECT array_agg(a.n ORDER BY a.n) FROM applied AS a),
           (SELECT array_agg((a.old).id ORDER BY a.n) FROM applied AS a),
           (SELECT array_agg(u.id) FROM updated AS u),
           (SELECT array_agg(u.project_id) FROM updated AS u)
    INTO v_done, v_ids, v_changed, v_changed_projects;
    v_done := coalesce(v_done, ARRAY[]::bigint[]);
    v_ids := coalesce(v_ids, ARRAY[]::uuid[]);
    v_changed := coalesce(v_changed, ARRAY[]::uuid[]);
    v_changed_projects := coalesce(v_changed_projects, ARRAY[]::uuid[]);

    -- No one yet: the first item naming each such identifier creates its profile, under the identifier's
    -- advisory lock (taken for the whole batch in one order), if the identifier still names no one then
    -- and its data fits under the cap (else it goes one by one, to be refused there).
    -- Checked before the locks too, so that no identifier of a profile locked above is advisory-locked
    -- after its row (a resolution takes them the other way round: that order would deadlock).
    SELECT array_agg(f.n) INTO v_fresh
    FROM (
        SELECT DISTINCT ON (s.project, s.source, s.external_id) s.*
        FROM unnest(v_n, v_project, v_source, v_external, v_fields) AS s(n, project, source, external_id, fields)
        WHERE s.n <> ALL (v_done)
        ORDER BY s.project, s.source, s.external_id, s.n
    ) AS f
    WHERE (SELECT 1 FROM {identifiers} AS y
           WHERE y.project_id = f.project AND y.source = f.source AND y.external_id = f.external_id) IS NULL
      AND (jsonb_typeof(f.fields -> 'data') IS DISTINCT FROM 'object' OR pg_column_size(f.fields -> 'data') <= v_max);

    IF v_fresh IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(k.h)
        FROM (
            SELECT DISTINCT hashtextextended(
                s.project::text || ':{entity}:' || s.source || ':' || s.external_id, 0) AS h
            FROM unnest(v_n, v_project, v_source, v_external) AS s(n, project, source, external_id)
            WHERE s.n = ANY (v_fresh)
            ORDER BY 1
        ) AS k;

        WITH todo AS MATERIALIZED (
            SELECT s.n, lunogram_new_id() AS id, s.project, s.source, s.external_id, s.fields
            FROM unnest(v_n, v_project, v_source, v_external, v_fields)
                 AS s(n, project, source, external_id, fields)
            WHERE s.n = ANY (v_fresh) AND (
                SELECT 1 FROM {identifiers} AS y
                WHERE y.project_id = s.project AND y.source = s.source AND y.external_id = s.external_id) IS NULL
        ), profiles AS (
            INSERT INTO {entities} (id, project_id, {settable})
            SELECT t.id, t.project, {settable}
            FROM todo AS t,
                 jsonb_populate_record(NULL::{entities}, coalesce(t.fields, jsonb_build_object()) - 'data'
                     || jsonb_build_object('data', CASE WHEN jsonb_typeof(t.fields -> 'data') = 'object'
                                                        THEN t.fields -> 'data' ELSE jsonb_build_object() END))
        ), identifiers AS (
            INSERT INTO {identifiers} (project_id, {entity}_id, source, external_id)
            SELECT t.project, t.id, t.source, t.external_id FROM todo AS t
        )
        SELECT v_done || array_agg(t.n), v_ids || array_agg(t.id),
               v_changed || array_agg(t.id), v_changed_projects || array_agg(t.project)
        INTO v_done, v_ids, v_changed, v_changed_projects
        FROM todo AS t;  -- (array || NULL is the array: nothing created, nothing added)
    END IF;

    IF cardinality(v_changed) > 0 THEN
        {on_change_many};
    END IF;

    -- Each answer as of its own write: the set path's now, before the others run. A public key's gets the
    -- shape that discloses nothing the request did not send (profile.sql).
    FOR v_item IN
        SELECT d.n, CASE WHEN (t.item ->> 3)::boolean
                         THEN lunogram_{entity}_public_json(d.id, t.item -> 1, t.item -> 2)
                         ELSE lunogram_{entity}_json(d.id) END::text AS body
        FROM unnest(v_done, v_ids) AS d(n, id), LATERAL (SELECT p_items -> (d.n::integer - 1) AS item) AS t
    LOOP
        v_answers[v_item.n] := v_item.body;
    END LOOP;
    -- One by one, each in a subtransaction of its own (a BEGIN ... EXCEPTION block): an item refused by a
    -- limit (limits.sql) is undone alone and answered with its refusal; the batch, and every other item,
    -- goes on. (At most LUNOGRAM_UPSERT_MAX_BATCH subtransactions per batch, 64 by default: PostgreSQL keeps
    -- up to 64 per transaction in shared memory, past that other sessions' snapshots get slower.)
    FOR v_item IN
        SELECT t.n, (t.item ->> 0)::uuid AS project, t.item -> 1 AS identifiers, t.item -> 2 AS fields,
               coalesce((t.item ->> 3)::boolean, false) AS public
        FROM jsonb_array_elements(p_items) WITH ORDINALITY AS t(item, n)
        WHERE t.n <> ALL (v_done)
        ORDER BY t.n
    LOOP
        BEGIN
            v_answers[v_item.n] := lunogram_upsert_{entity}(
                v_item.project, v_item.identifiers, v_item.fields, v_item.public)::text;
        EXCEPTION WHEN SQLSTATE '22LN1' OR SQLSTATE '42LN3' THEN
            v_answers[v_item.n] := lunogram_refusal(SQLSTATE, SQLERRM)::text;
        END;
    END LOOP;
    RETURN QUERY SELECT a.body FROM unnest(v_answers) WITH ORDINALITY AS a(body, n) ORDER BY a.n;
END
$fn$;

-- Keyed upserts in one call (the Python SDK sends an Idempotency-Key with each). p_items is a JSON array of
-- [project, key, request hash (hex), identifiers, fields, public?]; each answer is what
-- lunogram_keyed_upsert_{entity} would answer (http/idempotency.py has the rules). The first item under each
-- key claims it if the key is free; the claimed items are upserted together by lunogram_upsert_{entities}
-- and their answers stored, in this transaction; a refused one releases its key (a refusal is not
-- remembered). Every other item (a key seen before, maybe expired, or used twice in this batch) then goes
-- one by one through lunogram_keyed_upsert_{entity}: the stored answer, 409, or a fresh upsert.
-- Joins only as index probes (the SET below): the keys table is large, and a new database's statistics say
-- it is empty.
CREATE OR REPLACE FUNCTION lunogram_keyed_upsert_{entities}(p_items jsonb)
RETURNS SETOF text LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_hashjoin = off
SET enable_mergejoin = off AS $fn$
DECLARE
    v_claimed bigint[];
    v_bodies text[];
    v_answers text[] := array_fill(NULL::text, ARRAY[jsonb_array_length(p_items)]);
    v_item record;
BEGIN
    WITH firsts AS (
        SELECT DISTINCT ON (project, key) t.n, (t.item ->> 0)::uuid AS project, t.item ->> 1 AS key,
               decode(t.item ->> 2, 'hex') AS hash
        FROM jsonb_array_elements(p_items) WITH ORDINALITY AS t(item, n)
        ORDER BY project, key, t.n
    ), claimed AS (
        INSERT INTO idempotency_keys (project_id, key, request_hash, status, body)
        SELECT f.project, f.key, f.hash, 0, '' FROM firsts AS f
        ON CONFLICT (project_id, key) DO NOTHING
        RETURNING project_id, key
    )
    SELECT array_agg(f.n ORDER BY f.n) INTO v_claimed
    FROM firsts AS f JOIN claimed AS c ON c.project_id = f.project AND c.key = f.key;
    v_claimed := coalesce(v_claimed, ARRAY[]::bigint[]);

    IF cardinality(v_claimed) > 0 THEN
        v_bodies := ARRAY(
            SELECT r.body
            FROM lunogram_upsert_{entities}((
                     SELECT jsonb_agg(jsonb_build_array(t.item -> 0, t.item -> 3, t.item -> 4, t.item -> 5)
                                      ORDER BY t.n)
                     FROM jsonb_array_elements(p_items) WITH ORDINALITY AS t(item, n)
                     WHERE t.n = ANY (v_claimed))) WITH ORDINALITY AS r(body, k)
            ORDER BY r.k);
        -- a profile's answer is a JSON object, a refusal an array (lunogram_refusal)
        UPDATE idempotency_keys AS k
        SET status = 200, body = convert_to(b.body, 'UTF8'), content_type = 'application/json'
        FROM (
            SELECT (t.item ->> 0)::uuid AS project, t.item ->> 1 AS key, c.body
            FROM unnest(v_claimed, v_bodies) AS c(n, body),
                 LATERAL (SELECT p_items -> (c.n::integer - 1) AS item) AS t
            WHERE left(c.body, 1) <> '['
        ) AS b
        WHERE k.project_id = b.project AND k.key = b.key;
        DELETE FROM idempotency_keys AS k
        USING (
            SELECT (t.item ->> 0)::uuid AS project, t.item ->> 1 AS key
            FROM unnest(v_claimed, v_bodies) AS c(n, body),
                 LATERAL (SELECT p_items -> (c.n::integer - 1) AS item) AS t
            WHERE left(c.body, 1) = '['
        ) AS b
        WHERE k.project_id = b.project AND k.key = b.key;
        FOR v_item IN SELECT c.n, c.body FROM unnest(v_claimed, v_bodies) AS c(n, body) LOOP
            v_answers[v_item.n] := CASE
                WHEN left(v_item.body, 1) = '['
                THEN jsonb_build_object('status', v_item.body::jsonb -> 0, 'problem', v_item.body::jsonb -> 1)
                ELSE jsonb_build_object('status', 200, 'body', v_item.body) END::text;
        END LOOP;
    END IF;

    FOR v_item IN
        SELECT t.n, t.item FROM jsonb_array_elements(p_items) WITH ORDINALITY AS t(item, n)
        WHERE t.n <> ALL (v_claimed)
        ORDER BY t.n
    LOOP
        v_answers[v_item.n] := lunogram_keyed_upsert_{entity}(
            (v_item.item ->> 0)::uuid, v_item.item ->> 1, v_item.item ->> 2, v_item.item -> 3, v_item.item -> 4,
            coalesce((v_item.item ->> 5)::boolean, false))::text;
    END LOOP;
    RETURN QUERY SELECT a.body FROM unnest(v_answers) WITH ORDINALITY AS a(body, n) ORDER BY a.n;
END
$fn$;
