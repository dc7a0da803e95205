-- Workers follow merges from the merged profile to its survivor (events/sql/queries.sql: survivors).
CREATE INDEX organization_merges_merged ON organization_merges (merged_id);
