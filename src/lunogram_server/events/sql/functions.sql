-- Event routines, installed (CREATE OR REPLACE) at every migrate.

-- The inbox partition of an event: events with the same key (a profile's first identifier,
-- `source:external_id`, or `match:<json>` for a broadcast) share a partition, which keeps them in order.
-- Ingest and the scheduler both enqueue through this; an inlined SQL function, so it costs nothing.
CREATE OR REPLACE FUNCTION lunogram_event_partition(p_project uuid, p_kind text, p_key text)
RETURNS smallint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT mod(abs(hashtextextended(p_project::text || ':' || p_kind || ':' || p_key, 0)), 64)::smallint
$fn$;
