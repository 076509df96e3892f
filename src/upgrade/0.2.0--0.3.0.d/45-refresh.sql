-- 0.2.0 -> 0.3.0, live RFM performance (issue 11, bars): the pending-change
-- table loses its customer_id index, which every tracked statement paid for
-- (half of the trigger's cost); folds read the whole table anyway and
-- customer_rfm scans the pending rows (rfm_track.sql).  Runs after
-- 40-tracking.sql, which creates the table.

DROP INDEX loyalty.customer_stats_delta_customer;
