--
-- loyalty.citus_setup() without Citus, and the key checks it relies on
-- (the Citus cluster itself: test/scripts/citus.sh)
--
\set VERBOSITY terse
-- no Citus in this server: refused, with the reason
SELECT * FROM loyalty.citus_setup();
SELECT loyalty._citus_is_distributed('loyalty.redemption'::regclass) AS distributed;
-- every unique index of the per-customer coupon and RFM tables includes customer_id
SELECT t, loyalty._citus_keyed_by(('loyalty.' || t)::regclass, 'customer_id') AS keyed
FROM unnest(ARRAY['customer_stats', 'customer_stats_delta', 'segment_change', 'coupon_order',
				  'redemption', 'reservation', 'coupon_return', 'coupon_return_line']) AS t;
-- and their customer_id is text COLLATE "C" (colocation needs one collation)
SELECT c.relname, a.attcollation::regcollation AS collation
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE c.relnamespace = 'loyalty'::regnamespace AND c.relkind = 'r' AND a.attname = 'customer_id'
  AND c.relname IN ('customer_stats', 'customer_stats_delta', 'segment_change', 'coupon_order',
					'coupon_order_owner', 'redemption', 'reservation', 'coupon_return',
					'coupon_return_line', 'coupon')
ORDER BY 1;
-- a table with a unique key without the column is reported as not keyed
CREATE TABLE citus_t (customer_id text, ref text UNIQUE);
SELECT loyalty._citus_keyed_by('citus_t'::regclass, 'customer_id') AS keyed;
DROP TABLE citus_t;
-- one customer per order_ref: the owner's primary key
SELECT pg_get_constraintdef(oid) FROM pg_constraint
WHERE conrelid = 'loyalty.coupon_order_owner'::regclass AND contype = 'p';
-- one redemption per (customer, order, code)
SELECT pg_get_indexdef('loyalty.redemption_order_coupon_key'::regclass);
