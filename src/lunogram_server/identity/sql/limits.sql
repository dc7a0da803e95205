-- Caps on what a write may store, enforced where writes are merged into stored data (installed before the
-- templates that use them). Refusals raise an SQLSTATE of our own that the server answers as a 4xx problem
-- (db/refusals.py): 22LN1 (413; a data exception, so a CSV import reports it by line) for data over its
-- cap, 42LN3 (403) for a merge a public key may not make (resolve.sql). Nothing is written by a refused
-- write: the error rolls its transaction (or, inside a batch of upserts, its subtransaction) back.

-- LUNOGRAM_MAX_PROFILE_DATA_BYTES: the largest stored `data` of a user, an organization or a membership, and
-- `metadata` of an identifier. The server passes it to each of its connections as a session parameter
-- (db/session.py); a connection without it gets the default (config.py Limits, 256 KiB).
CREATE OR REPLACE FUNCTION lunogram_max_profile_data_bytes() RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE AS $fn$
    SELECT coalesce(nullif(current_setting('lunogram.max_profile_data_bytes', true), '')::integer, 262144)
$fn$;

-- p_data if it fits under the cap; otherwise error 22LN1 naming p_what and the cap. The size is the jsonb
-- value's as built (pg_column_size of a value just computed, before any compression on disk): read in
-- constant time, about the size of the compact JSON text. Called with the value a write would store, that
-- is after merging the write into the stored value.
CREATE OR REPLACE FUNCTION lunogram_checked_data(p_data jsonb, p_what text) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    v_size integer := pg_column_size(p_data);
    v_max integer;
BEGIN
    IF v_size IS NULL OR v_size <= 1024 THEN  -- the smallest cap the server takes: skip reading the setting
        RETURN p_data;
    END IF;
    v_max := lunogram_max_profile_data_bytes();
    IF v_size > v_max THEN
        RAISE EXCEPTION '%: % bytes once stored (merged into the stored value); at most % bytes are stored (LUNOGRAM_MAX_PROFILE_DATA_BYTES)',
            p_what, v_size, v_max
            USING ERRCODE = '22LN1';
    END IF;
    RETURN p_data;
END
$fn$;

-- A refusal as the upsert batches answer it (identity/sql/batch.sql: one item refused, the others done):
-- [status, detail] in place of the profile; keyed: {status, problem}.
CREATE OR REPLACE FUNCTION lunogram_refusal(p_state text, p_message text) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT jsonb_build_array(CASE p_state WHEN '42LN3' THEN 403 ELSE 413 END, p_message)
$fn$;

CREATE OR REPLACE FUNCTION lunogram_refusal_answer(p_state text, p_message text) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT jsonb_build_object('status', CASE p_state WHEN '42LN3' THEN 403 ELSE 413 END, 'problem', p_message)
$fn$;
