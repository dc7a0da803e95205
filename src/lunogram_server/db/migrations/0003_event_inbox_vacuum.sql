-- The inbox is a queue: every row is deleted soon after it is inserted. With the default thresholds
-- (20% of the table) autovacuum let 600k dead rows pile up during a 1M-event backlog, and the claim queries
-- stepped over their index entries (bench/process.py: 0.5 -> 4-8 ms per claim). Vacuum it early and fast.
ALTER TABLE event_inbox SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 10000,
    autovacuum_analyze_scale_factor = 0.05,
    autovacuum_vacuum_cost_delay = 0
);
