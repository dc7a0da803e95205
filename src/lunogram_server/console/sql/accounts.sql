-- Console accounts: users, roles, sessions, one-time links, login failures (console/accounts.py).

-- name: lock_accounts
-- Serialises the first owner's setup (two browsers using the link at once make one owner).
SELECT pg_advisory_xact_lock(hashtextextended('lunogram:console-accounts', 0));

-- name: count_users
SELECT count(*) FROM console_users;

-- name: insert_user
INSERT INTO console_users (email, name, password_hash, superuser)
VALUES (%(email)s, %(name)s, %(password_hash)s, %(superuser)s)
ON CONFLICT (email) DO NOTHING
RETURNING id, email, name, superuser, created_at;

-- name: user_by_email
SELECT id, email, name, password_hash, superuser, disabled_at FROM console_users WHERE email = %(email)s;

-- name: user_by_id
SELECT id, email, name, password_hash, superuser, disabled_at FROM console_users WHERE id = %(user_id)s;

-- name: list_users
SELECT u.email, u.name, u.superuser, u.disabled_at IS NOT NULL, u.password_hash IS NOT NULL,
       coalesce(string_agg(p.name || ':' || r.role, ', ' ORDER BY p.name), '')
FROM console_users AS u
LEFT JOIN console_roles AS r ON r.user_id = u.id
LEFT JOIN projects AS p ON p.id = r.project_id
GROUP BY u.id
ORDER BY u.email;

-- name: set_password
UPDATE console_users SET password_hash = %(password_hash)s, updated_at = now() WHERE id = %(user_id)s;

-- name: set_disabled
UPDATE console_users SET disabled_at = CASE WHEN %(disabled)s THEN coalesce(disabled_at, now()) END,
       updated_at = now()
WHERE id = %(user_id)s
RETURNING id;

-- name: set_superuser
UPDATE console_users SET superuser = %(superuser)s, updated_at = now() WHERE id = %(user_id)s RETURNING id;

-- name: delete_user
DELETE FROM console_users WHERE id = %(user_id)s RETURNING id;

-- name: grant_role
INSERT INTO console_roles (user_id, project_id, role) VALUES (%(user_id)s, %(project_id)s, %(role)s)
ON CONFLICT (user_id, project_id) DO UPDATE SET role = excluded.role;

-- name: revoke_role
DELETE FROM console_roles WHERE user_id = %(user_id)s AND project_id = %(project_id)s RETURNING role;

-- name: role_of
SELECT CASE WHEN u.superuser THEN 'owner' ELSE r.role END
FROM console_users AS u
LEFT JOIN console_roles AS r ON r.user_id = u.id AND r.project_id = %(project_id)s
WHERE u.id = %(user_id)s AND u.disabled_at IS NULL;

-- name: owners_of
-- Who can still act as owner of a project: its owners and the superusers (not disabled).
SELECT u.id FROM console_users AS u
LEFT JOIN console_roles AS r ON r.user_id = u.id AND r.project_id = %(project_id)s
WHERE u.disabled_at IS NULL AND (u.superuser OR r.role = 'owner');

-- name: members_of
-- A project's console users with their role there; superusers are owners of every project.
SELECT u.id, u.email, u.name, u.superuser, u.disabled_at, u.password_hash IS NOT NULL AS has_password,
       CASE WHEN u.superuser THEN 'owner' ELSE r.role END AS role, u.created_at
FROM console_users AS u
LEFT JOIN console_roles AS r ON r.user_id = u.id AND r.project_id = %(project_id)s
WHERE u.superuser OR r.role IS NOT NULL
ORDER BY u.email
LIMIT 1000;

-- name: projects_of
-- The projects a user may open in the console, with their role in each (superusers: all, as owner).
SELECT p.id, p.name, CASE WHEN u.superuser THEN 'owner' ELSE r.role END AS role
FROM console_users AS u
CROSS JOIN projects AS p
LEFT JOIN console_roles AS r ON r.user_id = u.id AND r.project_id = p.id
WHERE u.id = %(user_id)s AND (u.superuser OR r.role IS NOT NULL)
ORDER BY p.created_at, p.name
LIMIT 1000;

-- name: insert_token
INSERT INTO console_tokens (token_hash, purpose, user_id, expires_at)
VALUES (%(token_hash)s, %(purpose)s, %(user_id)s, now() + make_interval(secs => %(seconds)s));

-- name: token
-- A one-time link that can still be used, with the user it is for.
SELECT t.purpose, t.user_id, u.email, u.name
FROM console_tokens AS t LEFT JOIN console_users AS u ON u.id = t.user_id
WHERE t.token_hash = %(token_hash)s AND t.used_at IS NULL AND t.expires_at > now()
  AND (t.user_id IS NULL OR u.disabled_at IS NULL);

-- name: use_token
UPDATE console_tokens SET used_at = now()
WHERE token_hash = %(token_hash)s AND used_at IS NULL AND expires_at > now()
RETURNING purpose, user_id;

-- name: retire_setup_tokens
UPDATE console_tokens SET used_at = now() WHERE purpose = 'setup' AND used_at IS NULL;

-- name: retire_user_tokens
UPDATE console_tokens SET used_at = now() WHERE user_id = %(user_id)s AND used_at IS NULL;

-- name: count_failures
-- Failures within the window, per subject asked about.
SELECT s.subject, (SELECT count(*) FROM console_login_failures AS f
                   WHERE f.subject = s.subject AND f.at > now() - make_interval(secs => %(window)s))
FROM unnest(%(subjects)s::text[]) AS s (subject);

-- name: oldest_failure
-- When the oldest failure that still counts for a subject leaves the window (for Retry-After).
SELECT extract(epoch FROM min(at) + make_interval(secs => %(window)s) - now())::float8
FROM console_login_failures
WHERE subject = %(subject)s AND at > now() - make_interval(secs => %(window)s);

-- name: record_failure
INSERT INTO console_login_failures (subject) SELECT unnest(%(subjects)s::text[]);

-- name: clear_failures
DELETE FROM console_login_failures WHERE subject = %(subject)s;

-- name: insert_session
INSERT INTO console_sessions (token_hash, user_id, project_id, csrf_token, address, user_agent, expires_at)
VALUES (%(token_hash)s, %(user_id)s, %(project_id)s, %(csrf_token)s, %(address)s, %(user_agent)s,
        now() + make_interval(secs => %(max_seconds)s))
RETURNING id;

-- name: session
-- The session behind a cookie, with its user and the role in its current project; nothing when it was
-- revoked, has expired, idled out, or its user is disabled.
SELECT s.id, s.user_id, s.csrf_token, s.project_id, p.name AS project_name, u.email, u.name, u.superuser,
       CASE WHEN p.id IS NULL THEN NULL WHEN u.superuser THEN 'owner' ELSE r.role END AS role,
       s.last_seen_at < now() - interval '60 seconds' AS stale
FROM console_sessions AS s
JOIN console_users AS u ON u.id = s.user_id AND u.disabled_at IS NULL
LEFT JOIN projects AS p ON p.id = s.project_id
LEFT JOIN console_roles AS r ON r.user_id = s.user_id AND r.project_id = s.project_id
WHERE s.token_hash = %(token_hash)s AND s.revoked_at IS NULL AND s.expires_at > now()
  AND s.last_seen_at > now() - make_interval(secs => %(idle_seconds)s);

-- name: touch_session
UPDATE console_sessions SET last_seen_at = now() WHERE id = %(session_id)s;

-- name: set_session_project
UPDATE console_sessions SET project_id = %(project_id)s WHERE id = %(session_id)s AND revoked_at IS NULL;

-- name: revoke_session
UPDATE console_sessions SET revoked_at = now() WHERE id = %(session_id)s AND revoked_at IS NULL;

-- name: revoke_user_sessions
UPDATE console_sessions SET revoked_at = now() WHERE user_id = %(user_id)s AND revoked_at IS NULL;

-- name: first_project
SELECT p.id FROM projects AS p
JOIN console_users AS u ON u.id = %(user_id)s
LEFT JOIN console_roles AS r ON r.user_id = u.id AND r.project_id = p.id
WHERE u.superuser OR r.role IS NOT NULL
ORDER BY p.created_at, p.name
LIMIT 1;

-- name: purge
-- Housekeeping: sessions, links and login failures nobody can use any more.
WITH sessions AS (
    DELETE FROM console_sessions WHERE expires_at < now() - interval '1 day'
        OR revoked_at < now() - interval '1 day' RETURNING 1
), tokens AS (
    DELETE FROM console_tokens WHERE expires_at < now() - interval '7 days' RETURNING 1
), failures AS (
    DELETE FROM console_login_failures WHERE at < now() - interval '1 day' RETURNING 1
)
SELECT (SELECT count(*) FROM sessions), (SELECT count(*) FROM tokens), (SELECT count(*) FROM failures);
