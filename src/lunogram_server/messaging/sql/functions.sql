-- Messaging: reactions to other domains' changes (reactions.py). Installed (CREATE OR REPLACE) at every
-- migrate.

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
