-- Messaging's routines, installed (CREATE OR REPLACE) at every migrate: reactions to other domains' changes
-- (reactions.py), the outbox's wake-ups, devices and the inbox.

-- A merged user's messages and subscription choices follow it (the survivor's own choices win).
CREATE OR REPLACE FUNCTION lunogram_messaging_on_user_merged(p_project uuid, p_survivor uuid, p_merged uuid)
RETURNS void LANGUAGE sql AS $fn$
    UPDATE message_outbox SET user_id = p_survivor, updated_at = now() WHERE user_id = p_merged;
    INSERT INTO subscriptions (user_id, group_id, project_id, subscribed, source, updated_at)
    SELECT p_survivor, group_id, project_id, subscribed, source, updated_at FROM subscriptions WHERE user_id = p_merged
    ON CONFLICT (user_id, group_id) DO NOTHING;
$fn$;

-- A deleted user's messages still waiting are not sent (their record stays).
CREATE OR REPLACE FUNCTION lunogram_messaging_on_users_deleted(p_project uuid, p_users uuid[])
RETURNS void LANGUAGE sql AS $fn$
    UPDATE message_outbox SET status = 'cancelled', reason = 'the user was deleted', updated_at = now()
    WHERE user_id = ANY (p_users) AND status = 'queued';
$fn$;

-- Wake idle senders when messages are queued (a journey's send step, the API, a campaign): one
-- notification per inserting statement, delivered at commit.
CREATE OR REPLACE FUNCTION lunogram_messages_queued() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_notify('lunogram_messages', '');
    RETURN NULL;
END
$fn$;

-- Push devices and the in-app inbox (messaging/devices.py, messaging/inbox.py). Each write is one call,
-- hence one statement, one transaction and one round trip.

-- Caps (docs/api.md "Limits"; the same numbers as MAX_DEVICES_PER_USER in messaging/devices.py and
-- MAX_INBOX_MESSAGES in messaging/inbox.py). Past them the oldest go: a phone or browser registers anew
-- whenever its token rotates, and an inbox shows the newest, so refusing the new one would be the wrong way.
CREATE OR REPLACE FUNCTION lunogram_max_devices_per_user() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT 100';

CREATE OR REPLACE FUNCTION lunogram_max_inbox_messages() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT 1000';

-- The profiles p_identifiers name (identity/sql/resolve.sql), users or organizations by p_kind: with
-- p_create, the one they resolve to (created or merged as any write does); without, every match, oldest id first.
CREATE OR REPLACE FUNCTION lunogram_messaging_profiles(
    p_project uuid, p_kind text, p_identifiers jsonb, p_create boolean) RETURNS SETOF uuid
LANGUAGE plpgsql AS $fn$
BEGIN
    IF p_kind = 'user' THEN
        RETURN QUERY SELECT entity_id FROM lunogram_resolve_user(p_project, p_identifiers, p_create) ORDER BY 1;
    ELSE
        RETURN QUERY SELECT entity_id FROM lunogram_resolve_organization(p_project, p_identifiers, p_create) ORDER BY 1;
    END IF;
END
$fn$;

-- -- devices ------------------------------------------------------------------------------------------------

-- users.has_push_device made to say whether each of p_users has a device; with p_bump a change is a new
-- version of the profile (a merge has counted its own).
CREATE OR REPLACE FUNCTION lunogram_devices_sync(p_users uuid[], p_bump boolean) RETURNS void
LANGUAGE sql AS $fn$
    UPDATE users AS u SET
        has_push_device = d.has,
        version = u.version + CASE WHEN p_bump THEN 1 ELSE 0 END,
        updated_at = CASE WHEN p_bump THEN now() ELSE u.updated_at END
    FROM (SELECT DISTINCT t.user_id AS id, EXISTS (SELECT 1 FROM devices AS v WHERE v.user_id = t.user_id) AS has
          FROM unnest(p_users) AS t(user_id)) AS d
    WHERE u.id = d.id AND u.has_push_device IS DISTINCT FROM d.has
$fn$;

-- Keep a user's newest devices (by last registration) up to the cap.
CREATE OR REPLACE FUNCTION lunogram_devices_trim(p_user uuid) RETURNS void
LANGUAGE sql AS $fn$
    DELETE FROM devices WHERE id IN (
        SELECT id FROM devices WHERE user_id = p_user
        ORDER BY updated_at DESC, id DESC OFFSET lunogram_max_devices_per_user())
$fn$;

-- Register (or update) the device p_device (the columns of `devices`, as JSON) of the user p_identifiers
-- name; false when no user of the project has them. The push address moves here from any other device
-- or user that had it; has_push_device follows for everyone concerned.
CREATE OR REPLACE FUNCTION lunogram_register_device(p_project uuid, p_identifiers jsonb, p_device jsonb)
RETURNS boolean LANGUAGE plpgsql AS $fn$
DECLARE
    v_user uuid;
    v_address text := coalesce(p_device ->> 'token', p_device ->> 'endpoint');
    v_device_id text := p_device ->> 'device_id';
    v_left uuid[];
BEGIN
    -- the user stays while its device is written (a concurrent delete or merge waits, or went first)
    SELECT u.id INTO v_user FROM users AS u
    WHERE u.id IN (SELECT lunogram_messaging_profiles(p_project, 'user', p_identifiers, false))
      AND u.project_id = p_project
    ORDER BY u.id LIMIT 1
    FOR KEY SHARE;
    IF v_user IS NULL THEN
        RETURN false;
    END IF;
    -- one registration of an address at a time, so two users claiming it cannot both keep it
    PERFORM pg_advisory_xact_lock(hashtextextended(p_project::text || ':device:' || v_address, 0));
    WITH moved AS (
        DELETE FROM devices
        WHERE project_id = p_project AND md5(address) = md5(v_address) AND address = v_address
          AND NOT (user_id = v_user AND device_id = v_device_id)
        RETURNING user_id
    )
    SELECT coalesce(array_agg(user_id), '{}') INTO v_left FROM moved;
    INSERT INTO devices AS d (project_id, user_id, device_id, os, os_version, model, app_version, data, token,
                              endpoint, p256dh, auth, expiration_time)
    VALUES (p_project, v_user, v_device_id, p_device ->> 'os', p_device ->> 'os_version', p_device ->> 'model',
            p_device ->> 'app_version', coalesce(p_device -> 'data', '{}'), p_device ->> 'token',
            p_device ->> 'endpoint', p_device ->> 'p256dh', p_device ->> 'auth',
            (p_device ->> 'expiration_time')::timestamptz)
    ON CONFLICT (user_id, device_id) DO UPDATE SET
        os = excluded.os, os_version = excluded.os_version, model = excluded.model,
        app_version = excluded.app_version, data = excluded.data, token = excluded.token,
        endpoint = excluded.endpoint, p256dh = excluded.p256dh, auth = excluded.auth,
        expiration_time = excluded.expiration_time, updated_at = now();
    PERFORM lunogram_devices_trim(v_user);
    PERFORM lunogram_devices_sync(v_left || v_user, true);
    RETURN true;
END
$fn$;

-- Drop the device(s) a provider said will never be reached again (an unregistered token, a Web Push
-- subscription gone); how many went. has_push_device follows.
CREATE OR REPLACE FUNCTION lunogram_forget_device(p_project uuid, p_address text) RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    v_users uuid[];
BEGIN
    WITH gone AS (
        DELETE FROM devices
        WHERE project_id = p_project AND md5(address) = md5(p_address) AND address = p_address
        RETURNING user_id
    )
    SELECT coalesce(array_agg(user_id), '{}') INTO v_users FROM gone;
    PERFORM lunogram_devices_sync(v_users, true);
    RETURN cardinality(v_users);
END
$fn$;

-- Reactions (reactions.py). A merged user's devices move to the survivor; a device_id both have keeps the
-- one registered last. (Deletes need no handler: devices go with their user, by the foreign key.)
CREATE OR REPLACE FUNCTION lunogram_devices_on_user_merged(p_project uuid, p_survivor uuid, p_merged uuid)
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    DELETE FROM devices AS s USING devices AS m
    WHERE s.user_id = p_survivor AND m.user_id = p_merged AND m.device_id = s.device_id
      AND m.updated_at > s.updated_at;
    UPDATE devices AS m SET user_id = p_survivor
    WHERE m.user_id = p_merged
      AND NOT EXISTS (SELECT 1 FROM devices AS s WHERE s.user_id = p_survivor AND s.device_id = m.device_id);
    PERFORM lunogram_devices_trim(p_survivor);
    PERFORM lunogram_devices_sync(ARRAY[p_survivor], false);
END
$fn$;

-- -- inbox --------------------------------------------------------------------------------------------------

-- Keep a target's newest messages per channel (by when they show) up to the cap; expired ones go too.
CREATE OR REPLACE FUNCTION lunogram_inbox_trim(p_owner uuid) RETURNS void
LANGUAGE sql AS $fn$
    DELETE FROM inbox_messages WHERE id IN (
        SELECT id FROM (
            SELECT id, expires_at,
                   row_number() OVER (PARTITION BY channel ORDER BY scheduled_at DESC, id DESC) AS n
            FROM inbox_messages WHERE owner_id = p_owner) AS ranked
        WHERE n > lunogram_max_inbox_messages() OR expires_at <= now())
$fn$;

-- Store inbox messages (POST /client/{users,organizations}/inbox): p_items is the validated batch, each
-- with `target` (normalised identifiers: the profile is created or merged as any write does), `identifier`
-- and the message's fields. A message whose identifier the target already has on that channel is skipped.
-- Returns how many were stored.
CREATE OR REPLACE FUNCTION lunogram_inbox_post(p_project uuid, p_kind text, p_items jsonb) RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    v_item jsonb;
    v_owner uuid;
    v_owners uuid[] := '{}';
    v_stored integer := 0;
    v_count integer;
BEGIN
    FOR v_item IN SELECT value FROM jsonb_array_elements(p_items) LOOP
        SELECT p.id INTO v_owner FROM lunogram_messaging_profiles(p_project, p_kind, v_item -> 'target', true) AS p(id)
        LIMIT 1;
        INSERT INTO inbox_messages (project_id, user_id, organization_id, identifier_source, identifier_external_id,
                                    channel, content, data, tags, priority, source, scheduled_at, expires_at)
        VALUES (p_project,
                CASE WHEN p_kind = 'user' THEN v_owner END,
                CASE WHEN p_kind = 'organization' THEN v_owner END,
                v_item -> 'identifier' ->> 'source',
                v_item -> 'identifier' ->> 'external_id',
                v_item ->> 'channel',
                coalesce(v_item -> 'content', '{}'),
                coalesce(v_item -> 'data', '{}'),
                ARRAY(SELECT jsonb_array_elements_text(coalesce(v_item -> 'tags', '[]'))),
                coalesce((v_item ->> 'priority')::smallint, 3),
                v_item ->> 'source',
                coalesce((v_item ->> 'scheduled_at')::timestamptz, now()),
                (v_item ->> 'expires_at')::timestamptz)
        ON CONFLICT DO NOTHING;
        GET DIAGNOSTICS v_count = ROW_COUNT;
        v_stored := v_stored + v_count;
        v_owners := v_owners || v_owner;
    END LOOP;
    PERFORM lunogram_inbox_trim(o) FROM (SELECT DISTINCT unnest(v_owners) AS o) AS d;
    RETURN v_stored;
END
$fn$;

-- Mark messages read or archived (p_what): p_items is [{target, message_id}]; a message the target does not
-- have (or no longer has) is skipped. Returns how many changed.
CREATE OR REPLACE FUNCTION lunogram_inbox_mark(p_project uuid, p_kind text, p_what text, p_items jsonb)
RETURNS integer LANGUAGE plpgsql AS $fn$
DECLARE
    v_count integer;
BEGIN
    WITH wanted AS (
        SELECT DISTINCT (i.item ->> 'message_id')::uuid AS message_id, p.owner_id
        FROM jsonb_array_elements(p_items) AS i(item),
             LATERAL lunogram_messaging_profiles(p_project, p_kind, i.item -> 'target', false) AS p(owner_id)
    )
    UPDATE inbox_messages AS m SET
        read_at = CASE WHEN p_what = 'read' THEN coalesce(m.read_at, now()) ELSE m.read_at END,
        archived_at = CASE WHEN p_what = 'archived' THEN coalesce(m.archived_at, now()) ELSE m.archived_at END,
        updated_at = now()
    FROM wanted AS w
    WHERE m.id = w.message_id AND m.owner_id = w.owner_id AND m.owner_kind = p_kind AND m.project_id = p_project
      AND CASE WHEN p_what = 'read' THEN m.read_at IS NULL ELSE m.archived_at IS NULL END;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$fn$;

-- A message the senders deliver on the inbox channel, for a user: idempotent by the outbox message id
-- (the identifier `outbox`:<id>). Its id (the one stored before, for a repeat); NULL when the user is not
-- (or no longer) in the project.
CREATE OR REPLACE FUNCTION lunogram_inbox_deliver(
    p_project uuid, p_user uuid, p_message uuid, p_content jsonb, p_data jsonb, p_tags text[], p_priority integer,
    p_source text, p_expires_at timestamptz) RETURNS uuid
LANGUAGE plpgsql AS $fn$
DECLARE
    v_id uuid;
BEGIN
    PERFORM 1 FROM users WHERE id = p_user AND project_id = p_project FOR KEY SHARE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    INSERT INTO inbox_messages (project_id, user_id, identifier_source, identifier_external_id, channel, content,
                                data, tags, priority, source, expires_at)
    VALUES (p_project, p_user, 'outbox', p_message::text, 'inbox', p_content, p_data, p_tags, p_priority, p_source,
            p_expires_at)
    ON CONFLICT DO NOTHING
    RETURNING id INTO v_id;
    IF v_id IS NULL THEN
        SELECT id INTO v_id FROM inbox_messages
        WHERE owner_id = p_user AND channel = 'inbox' AND identifier_source = 'outbox'
          AND md5(identifier_external_id) = md5(p_message::text) AND identifier_external_id = p_message::text;
        RETURN v_id;
    END IF;
    PERFORM lunogram_inbox_trim(p_user);
    RETURN v_id;
END
$fn$;

-- Reactions (reactions.py). A merged profile's messages move to the survivor, but for those whose identifier
-- the survivor already has on that channel (they go with the merged row). Deletes need no handler: messages
-- go with their profile, by the foreign keys.
CREATE OR REPLACE FUNCTION lunogram_inbox_on_user_merged(p_project uuid, p_survivor uuid, p_merged uuid)
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    UPDATE inbox_messages AS m SET user_id = p_survivor, updated_at = now()
    WHERE m.user_id = p_merged
      AND NOT EXISTS (
          SELECT 1 FROM inbox_messages AS s
          WHERE s.owner_id = p_survivor AND s.channel = m.channel AND s.identifier_source = m.identifier_source
            AND md5(s.identifier_external_id) = md5(m.identifier_external_id)
            AND s.identifier_external_id = m.identifier_external_id);
    PERFORM lunogram_inbox_trim(p_survivor);
END
$fn$;

CREATE OR REPLACE FUNCTION lunogram_inbox_on_organization_merged(p_project uuid, p_survivor uuid, p_merged uuid)
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    UPDATE inbox_messages AS m SET organization_id = p_survivor, updated_at = now()
    WHERE m.organization_id = p_merged
      AND NOT EXISTS (
          SELECT 1 FROM inbox_messages AS s
          WHERE s.owner_id = p_survivor AND s.channel = m.channel AND s.identifier_source = m.identifier_source
            AND md5(s.identifier_external_id) = md5(m.identifier_external_id)
            AND s.identifier_external_id = m.identifier_external_id);
    PERFORM lunogram_inbox_trim(p_survivor);
END
$fn$;

-- The InboxMessage of the Client API (docs/api.md "Devices and the inbox").
CREATE OR REPLACE FUNCTION lunogram_inbox_json(m inbox_messages) RETURNS jsonb
LANGUAGE sql STABLE AS $fn$
    SELECT jsonb_build_object(
        'id', m.id,
        'project_id', m.project_id,
        CASE WHEN m.owner_kind = 'user' THEN 'user_id' ELSE 'organization_id' END, m.owner_id,
        'identifier', jsonb_build_object('source', m.identifier_source, 'external_id', m.identifier_external_id),
        'external_id', m.identifier_external_id,
        'channel', m.channel,
        'content', m.content,
        'data', m.data,
        'tags', to_jsonb(m.tags),
        'priority', m.priority,
        'source', m.source,
        'status', CASE WHEN m.archived_at IS NOT NULL THEN 'archived'
                       WHEN m.read_at IS NOT NULL THEN 'read' ELSE 'unread' END,
        'scheduled_at', m.scheduled_at,
        'expires_at', m.expires_at,
        'read_at', m.read_at,
        'archived_at', m.archived_at,
        'created_at', m.created_at,
        'updated_at', m.updated_at)
$fn$;
