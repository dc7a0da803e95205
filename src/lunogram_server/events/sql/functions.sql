-- Event routines, installed (CREATE OR REPLACE) at every migrate.

-- The inbox partition of an event: events with the same key (a profile's first identifier,
-- `source:external_id`, or `match:<json>` for a broadcast) share a partition, which keeps them in order.
-- Ingest and the scheduler both enqueue through this; an inlined SQL function, so it costs nothing.
CREATE OR REPLACE FUNCTION lunogram_event_partition(p_project uuid, p_kind text, p_key text)
RETURNS smallint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT mod(abs(hashtextextended(p_project::text || ':' || p_kind || ':' || p_key, 0)), 64)::smallint
$fn$;

-- Reactions (reactions.py): event history follows a merged profile; an event both received (one broadcast)
-- is kept once.
CREATE OR REPLACE FUNCTION lunogram_events_on_user_merged(p_project uuid, p_survivor uuid, p_merged uuid)
RETURNS void LANGUAGE sql AS $fn$
    DELETE FROM user_events AS l
    WHERE l.user_id = p_merged
      AND EXISTS (SELECT 1 FROM user_events AS s WHERE s.inbox_id = l.inbox_id AND s.user_id = p_survivor);
    UPDATE user_events SET user_id = p_survivor WHERE user_id = p_merged;
$fn$;

CREATE OR REPLACE FUNCTION lunogram_events_on_organization_merged(p_project uuid, p_survivor uuid, p_merged uuid)
RETURNS void LANGUAGE sql AS $fn$
    DELETE FROM organization_events AS l
    WHERE l.organization_id = p_merged
      AND EXISTS (SELECT 1 FROM organization_events AS s
                  WHERE s.inbox_id = l.inbox_id AND s.organization_id = p_survivor);
    UPDATE organization_events SET organization_id = p_survivor WHERE organization_id = p_merged;
$fn$;
