-- Schedules: reactions to other domains' changes (reactions.py). Installed (CREATE OR REPLACE) at every
-- migrate.

-- A merged profile's schedules follow it; on a name clash the survivor's own schedule wins and the merged
-- profile's is cancelled (announced to lunogram_on_schedules_cancelled, then deleted).
CREATE OR REPLACE FUNCTION lunogram_schedules_on_user_merged(p_project uuid, p_survivor uuid, p_merged uuid)
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    v_clashing uuid[];
BEGIN
    v_clashing := ARRAY(
        SELECT l.id FROM schedules AS l
        WHERE l.user_id = p_merged
          AND EXISTS (SELECT 1 FROM schedules AS s WHERE s.user_id = p_survivor AND s.name = l.name));
    IF cardinality(v_clashing) > 0 THEN
        PERFORM lunogram_on_schedules_cancelled(p_project, v_clashing);
        DELETE FROM schedules WHERE id = ANY (v_clashing);
    END IF;
    UPDATE schedules SET user_id = p_survivor, updated_at = now() WHERE user_id = p_merged;
END
$fn$;

CREATE OR REPLACE FUNCTION lunogram_schedules_on_organization_merged(p_project uuid, p_survivor uuid, p_merged uuid)
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    v_clashing uuid[];
BEGIN
    v_clashing := ARRAY(
        SELECT l.id FROM schedules AS l
        WHERE l.organization_id = p_merged
          AND EXISTS (SELECT 1 FROM schedules AS s WHERE s.organization_id = p_survivor AND s.name = l.name));
    IF cardinality(v_clashing) > 0 THEN
        PERFORM lunogram_on_schedules_cancelled(p_project, v_clashing);
        DELETE FROM schedules WHERE id = ANY (v_clashing);
    END IF;
    UPDATE schedules SET organization_id = p_survivor, updated_at = now() WHERE organization_id = p_merged;
END
$fn$;

-- A deleted profile's schedules go with it (foreign key); announce them first.
CREATE OR REPLACE FUNCTION lunogram_schedules_on_users_deleted(p_project uuid, p_users uuid[])
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    v_ids uuid[] := ARRAY(SELECT id FROM schedules WHERE user_id = ANY (p_users));
BEGIN
    IF cardinality(v_ids) > 0 THEN
        PERFORM lunogram_on_schedules_cancelled(p_project, v_ids);
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION lunogram_schedules_on_organizations_deleted(p_project uuid, p_organizations uuid[])
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    v_ids uuid[] := ARRAY(SELECT id FROM schedules WHERE organization_id = ANY (p_organizations));
BEGIN
    IF cardinality(v_ids) > 0 THEN
        PERFORM lunogram_on_schedules_cancelled(p_project, v_ids);
    END IF;
END
$fn$;
