-- name: enqueue
-- One statement for the whole batch: the batch arrives as one jsonb array, partitions are computed here.
INSERT INTO event_inbox (project_id, kind, partition, name, data, identifiers, match)
SELECT %(project_id)s, %(kind)s,
       CASE WHEN e ? 'identifier'
            THEN mod(abs(hashtextextended(%(project_id)s::text || ':' || (e -> 'identifier' -> 0 ->> 'source')
                                         || ':' || (e -> 'identifier' -> 0 ->> 'external_id'), 0)), %(partitions)s)
            ELSE mod(abs(hashtextextended(%(project_id)s::text || ':match:' || (e ->> 'match'), 0)), %(partitions)s)
       END,
       e ->> 'name', coalesce(e -> 'data', '{}'::jsonb), e -> 'identifier', e -> 'match'
FROM jsonb_array_elements(%(events)s::jsonb) WITH ORDINALITY AS t(e, ord)
ORDER BY ord;
