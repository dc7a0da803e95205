-- Profiles, identifiers and schedules get time-ordered ids (UUIDv7) where the server has them (PostgreSQL
-- 18; random ones before). A random id puts each new row's index entries on a random page of the primary
-- key, of (project_id, id) and of the tables that refer to it: with millions of profiles those pages fall
-- out of the cache and every insert reads one and writes a full page image to the WAL. Time-ordered ids
-- land at the right edge. (An id now tells when its row was made, as created_at does.)
-- lunogram_new_id() is also how identity/sql/batch.sql names the profiles it creates.
DO $do$
BEGIN
    IF current_setting('server_version_num')::integer >= 180000 THEN
        CREATE OR REPLACE FUNCTION lunogram_new_id() RETURNS uuid LANGUAGE sql VOLATILE AS 'SELECT uuidv7()';
    ELSE
        CREATE OR REPLACE FUNCTION lunogram_new_id() RETURNS uuid LANGUAGE sql VOLATILE
            AS 'SELECT gen_random_uuid()';
    END IF;
END
$do$;

ALTER TABLE users ALTER COLUMN id SET DEFAULT lunogram_new_id();
ALTER TABLE user_identifiers ALTER COLUMN id SET DEFAULT lunogram_new_id();
ALTER TABLE organizations ALTER COLUMN id SET DEFAULT lunogram_new_id();
ALTER TABLE organization_identifiers ALTER COLUMN id SET DEFAULT lunogram_new_id();
ALTER TABLE schedules ALTER COLUMN id SET DEFAULT lunogram_new_id();
