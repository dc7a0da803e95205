-- Wake idle event workers when events arrive (ingest, scheduler, retries) instead of making them poll
-- often: one notification per inserting statement, delivered at commit (PostgreSQL folds repeats).
CREATE FUNCTION lunogram_events_arrived() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_notify('lunogram_events', '');
    RETURN NULL;
END
$fn$;

CREATE TRIGGER event_inbox_arrived AFTER INSERT ON event_inbox
    FOR EACH STATEMENT EXECUTE FUNCTION lunogram_events_arrived();
