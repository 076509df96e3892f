--
-- loyalty: RFM semantics on data shaped like public transaction logs (issue
-- 13, items 1, 2, 3 and 6): customers without an order in the window (CDNOW
-- scored decades later), a line-level orders table with cancellations (UCI
-- Online Retail), rows without customer or time, and one program time zone
-- for batch and live tracking.
--
SET client_min_messages = warning;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
CREATE SCHEMA sem;
-- live against batch: customers whose stored score or segment, or whose
-- customer_rfm statistics, differ from rfm_segmentation's
CREATE FUNCTION sem.live_vs_batch(rel regclass, cust name, t name, amt name,
								  as_of timestamptz, unit text DEFAULT 'rows')
RETURNS TABLE (customer_id text, live text, batch text)
LANGUAGE sql AS $$
	WITH b AS (SELECT * FROM loyalty.rfm_segmentation(rel, cust, t, amt, as_of,
													  frequency_unit => unit)),
		 l AS (SELECT s.customer_id, s.score, s.segment, r.recency_days, r.frequency, r.monetary
			   FROM loyalty.customer_stats s, loyalty.customer_rfm(s.customer_id, as_of) r
			   WHERE s.row_count > 0)
	SELECT coalesce(l.customer_id, b.customer_id),
		   format('%s %s %s/%s/%s', l.score, l.segment, l.recency_days, l.frequency, l.monetary),
		   format('%s %s %s/%s/%s', b.score, b.segment, b.recency_days, b.frequency, b.monetary)
	FROM l FULL JOIN b USING (customer_id)
	WHERE (l.score::text, l.segment, l.recency_days, l.frequency, l.monetary)
		  IS DISTINCT FROM (b.score::text, b.segment, b.recency_days, b.frequency, b.monetary)
$$;
CREATE FUNCTION sem.try(sql text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE sql;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END;
$$;
RESET client_min_messages;

-- ---------------------------------------------------------------------------
-- item 1: no order in the window never means recent activity.  CDNOW-like:
-- 200 customers buying on 1997-01-01 .. 1998-06-24 (a date column), most
-- once, some 2 to 6 times.
CREATE TABLE sem.cdnow (customer int, ordered_on date, amount numeric(8,2));
INSERT INTO sem.cdnow
SELECT c, date '1997-01-01' + ((c * 37 + k * 101) % 540), (10 + (c * k) % 90)::numeric(8,2)
FROM generate_series(1, 200) c,
	 generate_series(1, 1 + (c % 7 = 0)::int * 4 + (c % 3 = 0)::int) k;

-- as of 1998-06-30 (12-month window): customers without an order since
-- 1997-06-30 all score 111 (Lost), whatever their recency and spend rank
SELECT frequency = 0 AS no_order_in_window, score, segment, count(*)
FROM loyalty.rfm_segmentation('sem.cdnow', 'customer', 'ordered_on', 'amount', '1998-06-30')
WHERE frequency = 0
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
SELECT count(*) FILTER (WHERE frequency = 0) AS no_order_in_window,
	   count(*) FILTER (WHERE frequency > 0) AS ordered_in_window,
	   count(*) FILTER (WHERE frequency > 0 AND segment = 'Lost') AS ordered_and_lost
FROM loyalty.rfm_segmentation('sem.cdnow', 'customer', 'ordered_on', 'amount', '1998-06-30');

-- scored decades later: nobody ordered in the window, everybody is Lost
-- (not New, Promising or Champions by rank among the inactive)
SELECT score, segment, count(*), min(recency_days) AS min_recency
FROM loyalty.rfm_segmentation('sem.cdnow', 'customer', 'ordered_on', 'amount', '2026-12-01')
GROUP BY 1, 2 ORDER BY 1, 2;
-- thresholds or the average basket do not change the rule
SELECT DISTINCT score, segment
FROM loyalty.rfm_segmentation('sem.cdnow', 'customer', 'ordered_on', 'amount', '2026-12-01',
							  monetary_mode => 'average', recency_thresholds => '{30,90,180,365}');

-- live tracking applies the same rule: refresh_segments and customer_rfm
-- agree with batch customer by customer, at both dates
SELECT * FROM loyalty.track_orders('sem.cdnow', 'customer', 'ordered_on', 'amount');
SELECT customers FROM loyalty.refresh_segments('1998-06-30');
SELECT * FROM sem.live_vs_batch('sem.cdnow', 'customer', 'ordered_on', 'amount', '1998-06-30');
SELECT count(*) AS live_inactive_not_lost
FROM loyalty.customer_stats s, loyalty.customer_rfm(s.customer_id, '1998-06-30') r
WHERE r.frequency = 0 AND s.segment <> 'Lost';
SELECT customers FROM loyalty.refresh_segments('2026-12-01');
SELECT * FROM sem.live_vs_batch('sem.cdnow', 'customer', 'ordered_on', 'amount', '2026-12-01');
SELECT segment, count(*) FROM loyalty.customer_stats GROUP BY 1 ORDER BY 1;

SET client_min_messages = warning;
SELECT loyalty.untrack_orders('sem.cdnow');
DELETE FROM loyalty.customer_stats;
DELETE FROM loyalty.segment_change;
DELETE FROM loyalty.segment_summary;
DELETE FROM loyalty.segment_snapshot;
RESET client_min_messages;

-- ---------------------------------------------------------------------------
-- item 2: frequency in rows, distinct orders or distinct days.  A line-level
-- table like UCI Online Retail: one row per invoice line, cancellations as
-- invoices 'C...' with negative quantities, zero prices; item 3: lines
-- without a customer or a time.
CREATE TABLE sem.retail (
	invoice		text,
	stock_code	text,
	quantity	integer,
	invoice_date timestamp,
	unit_price	numeric(8,2),
	customer	integer,
	amount		numeric(10,2)
);
INSERT INTO sem.retail (invoice, stock_code, quantity, invoice_date, unit_price, customer)
VALUES
	-- 12346: two invoices on one day (5 and 2 lines), a third later, one cancelled line
	('536365', '85123A', 6, '2010-12-01 08:26', 2.55, 12346),
	('536365', '71053', 6, '2010-12-01 08:26', 3.39, 12346),
	('536365', '84406B', 8, '2010-12-01 08:26', 2.75, 12346),
	('536365', '84029G', 6, '2010-12-01 08:26', 3.39, 12346),
	('536365', '84029E', 6, '2010-12-01 08:26', 3.39, 12346),
	('536366', '22633', 6, '2010-12-01 08:28', 1.85, 12346),
	('536366', '22632', 6, '2010-12-01 08:28', 1.85, 12346),
	('536400', '22745', 12, '2010-12-05 10:00', 0.85, 12346),
	('536400', '22748', 12, '2010-12-05 10:00', 0.85, 12346),
	('536400', '22749', 8, '2010-12-05 10:00', 1.25, 12346),
	('C536401', '22749', -8, '2010-12-05 11:00', 1.25, 12346),
	-- 12347: one line per invoice, three days
	('537000', '21731', 24, '2010-12-02 14:00', 1.65, 12347),
	('537100', '22728', 4, '2011-01-10 09:00', 3.75, 12347),
	('537200', '22727', 4, '2011-03-01 09:30', 3.75, 12347),
	-- 12348: ten lines of one invoice
	('538000', '84992', 24, '2011-02-01 12:00', 0.55, 12348),
	('538000', '22951', 24, '2011-02-01 12:00', 0.55, 12348),
	('538000', '84991', 24, '2011-02-01 12:00', 0.55, 12348),
	('538000', '84991', 12, '2011-02-01 12:00', 0.55, 12348),
	('538000', '21212', 24, '2011-02-01 12:00', 0.55, 12348),
	('538000', '21213', 24, '2011-02-01 12:00', 0.55, 12348),
	('538000', '22423', 2, '2011-02-01 12:00', 12.75, 12348),
	('538000', '22697', 6, '2011-02-01 12:00', 2.95, 12348),
	('538000', '22698', 6, '2011-02-01 12:00', 2.95, 12348),
	('538000', '22699', 6, '2011-02-01 12:00', 2.95, 12348),
	-- 12349: an order long before the window, a cancellation in it
	('530000', '22086', 12, '2009-11-01 10:00', 2.55, 12349),
	('C539000', '22086', -12, '2011-02-02 10:00', 2.55, 12349),
	-- 12350: a free item (price 0) is an order of 0
	('540000', 'POST', 1, '2011-03-05 16:00', 0.00, 12350),
	-- item 3: lines without a customer (25% of Online Retail), one without a date
	('541000', '22139', 1, '2011-03-02 10:00', 4.95, NULL),
	('541000', '22140', 1, '2011-03-02 10:00', 4.95, NULL),
	('541000', '22141', 1, '2011-03-02 10:00', 4.95, NULL),
	('541001', '22142', 1, NULL, 4.95, 12350);
UPDATE sem.retail SET amount = quantity * unit_price;

-- rows counts lines, orders counts invoices (a cancellation is a refund, not
-- an order), days counts days with an order; monetary is the same; the rows
-- without customer or time are reported (item 3)
SELECT r.customer_id, r.frequency AS rows, o.frequency AS orders, d.frequency AS days,
	   r.monetary, r.recency_days, o.score AS orders_score, d.score AS days_score
FROM loyalty.rfm_segmentation('sem.retail', 'customer', 'invoice_date', 'amount', '2011-03-10') r
JOIN loyalty.rfm_segmentation('sem.retail', 'customer', 'invoice_date', 'amount', '2011-03-10',
							  frequency_unit => 'orders', order_column => 'invoice') o USING (customer_id)
JOIN loyalty.rfm_segmentation('sem.retail', 'customer', 'invoice_date', 'amount', '2011-03-10',
							  frequency_unit => 'days') d USING (customer_id)
ORDER BY 1;
-- the average basket is per order, not per line
SELECT customer_id, frequency, monetary
FROM loyalty.rfm_segmentation('sem.retail', 'customer', 'invoice_date', 'amount', '2011-03-10',
							  monetary_mode => 'average', frequency_unit => 'orders',
							  order_column => 'invoice')
ORDER BY 1;
-- argument errors
SET client_min_messages = warning;
SELECT sem.try($$SELECT * FROM loyalty.rfm_segmentation('sem.retail', 'customer', 'invoice_date', 'amount',
				frequency_unit => 'orders')$$) AS orders_without_column,
	   sem.try($$SELECT * FROM loyalty.rfm_segmentation('sem.retail', 'customer', 'invoice_date', 'amount',
				frequency_unit => 'days', order_column => 'invoice')$$) AS column_without_orders,
	   sem.try($$SELECT * FROM loyalty.rfm_segmentation('sem.retail', 'customer', 'invoice_date', 'amount',
				frequency_unit => 'lines')$$) AS unknown_unit,
	   sem.try($$SELECT * FROM loyalty.rfm_segmentation('sem.retail', 'customer', 'invoice_date', 'amount',
				frequency_unit => 'orders', order_column => 'nope')$$) AS unknown_column;
RESET client_min_messages;

-- live: the line-level table is tracked counting days; the back-fill
-- reports the rows it ignores (item 3); distinct orders are refused
SELECT sem.try($$SELECT * FROM loyalty.track_orders('sem.retail', 'customer', 'invoice_date', 'amount',
				frequency_unit => 'orders')$$) AS live_orders;
SELECT * FROM loyalty.track_orders('sem.retail', 'customer', 'invoice_date', 'amount',
								   frequency_unit => 'days');
SELECT customers FROM loyalty.refresh_segments('2011-03-10');
SELECT * FROM sem.live_vs_batch('sem.retail', 'customer', 'invoice_date', 'amount', '2011-03-10', 'days');

-- deleting one line of a day with several keeps the day; deleting a whole
-- invoice (and its cancellation) drops its day; an update changes the
-- spend only; a new line on a new day adds a day
DELETE FROM sem.retail WHERE invoice = '536365' AND stock_code = '71053';
SELECT frequency, monetary FROM loyalty.customer_rfm('12346', '2011-03-10');
DELETE FROM sem.retail WHERE invoice IN ('536400', 'C536401');
UPDATE sem.retail SET quantity = 48, amount = 48 * unit_price
WHERE invoice = '538000' AND stock_code = '84992';
INSERT INTO sem.retail (invoice, stock_code, quantity, invoice_date, unit_price, customer, amount)
VALUES ('541100', '22086', 2, '2011-03-09 09:00', 2.55, 12348, 5.10),
	   ('541100', '22087', 1, '2011-03-09 09:00', 2.55, 12348, 2.55);
SELECT s.customer_id, r.recency_days, r.frequency, r.monetary
FROM loyalty.customer_stats s, loyalty.customer_rfm(s.customer_id, '2011-03-10') r
ORDER BY 1;
SELECT customers FROM loyalty.refresh_segments('2011-03-10');
SELECT * FROM sem.live_vs_batch('sem.retail', 'customer', 'invoice_date', 'amount', '2011-03-10', 'days');
-- the analyst profile counts frequency as the tracking does (days here)
SELECT count(*) FILTER (WHERE p.frequency IS DISTINCT FROM r.frequency
							 OR p.monetary IS DISTINCT FROM r.monetary) AS profile_differs,
	   count(*) AS customers, sum(p.frequency) AS frequency
FROM loyalty.customer_profile p, loyalty.customer_rfm(p.customer_id, '2011-03-10') r
WHERE p.scored_as_of IS NOT NULL;
-- every tracked table counts the same way
CREATE TABLE sem.more_orders (customer integer, ordered_at timestamptz, amount numeric);
SELECT sem.try($$SELECT * FROM loyalty.track_orders('sem.more_orders', 'customer', 'ordered_at', 'amount')$$)
	AS other_unit;
SELECT orders, timezone, frequency_unit FROM loyalty.tracked_table;

SET client_min_messages = warning;
SELECT loyalty.untrack_orders('sem.retail');
DELETE FROM loyalty.customer_stats;
DELETE FROM loyalty.segment_change;
DELETE FROM loyalty.segment_summary;
DELETE FROM loyalty.segment_snapshot;
RESET client_min_messages;

-- ---------------------------------------------------------------------------
-- item 6: one program time zone for batch and live.  Local times of a shop
-- in New York (timestamp without time zone) and dates.
INSERT INTO loyalty.settings (timezone) VALUES ('America/New_York');
CREATE TABLE sem.ny (customer text, ordered_at timestamp, ordered_on date, amount numeric(8,2),
					 paid_at timestamptz);
INSERT INTO sem.ny VALUES
	('a', '2026-11-30 22:30', '2026-11-30', 10.00),	-- 03:30 UTC the next day
	('b', '2026-11-30 00:30', '2026-11-30', 20.00),
	('c', '2026-11-29 23:59', '2026-11-29', 5.00),
	('d', '2026-10-31 23:30', '2026-10-31', 8.00),
	('d', '2025-12-01 00:10', '2025-12-01', 3.00),	-- first day of the window
	('e', '2025-11-30 23:50', '2025-11-30', 7.00),	-- just before it
	('e', '2026-06-15 12:00', '2026-06-15', 1.00);
-- the same instants as timestamptz
UPDATE sem.ny SET paid_at = ordered_at AT TIME ZONE 'America/New_York';
-- as of midnight in New York: the session's TimeZone changes nothing
SET TimeZone = 'Asia/Tokyo';
CREATE TEMP TABLE ny_tokyo AS
SELECT * FROM loyalty.rfm_segmentation('sem.ny', 'customer', 'ordered_at', 'amount',
									   '2026-12-01 00:00-05');
CREATE TEMP TABLE ny_tokyo_dates AS
SELECT * FROM loyalty.rfm_segmentation('sem.ny', 'customer', 'ordered_on', 'amount',
									   '2026-12-01 00:00-05');
SET TimeZone = 'UTC';
SELECT customer_id, last_order, recency_days, frequency, monetary, score
FROM loyalty.rfm_segmentation('sem.ny', 'customer', 'ordered_at', 'amount', '2026-12-01 00:00-05')
ORDER BY 1;
SELECT customer_id, last_order, recency_days, frequency, monetary
FROM loyalty.rfm_segmentation('sem.ny', 'customer', 'ordered_on', 'amount', '2026-12-01 00:00-05')
ORDER BY 1;
SELECT (SELECT count(*) FROM (SELECT * FROM ny_tokyo EXCEPT
		SELECT * FROM loyalty.rfm_segmentation('sem.ny', 'customer', 'ordered_at', 'amount',
											   '2026-12-01 00:00-05')) x) AS tokyo_differs,
	   (SELECT count(*) FROM (SELECT * FROM ny_tokyo_dates EXCEPT
		SELECT * FROM loyalty.rfm_segmentation('sem.ny', 'customer', 'ordered_on', 'amount',
											   '2026-12-01 00:00-05')) x) AS tokyo_differs_dates;
-- the rfm_stats aggregates read dates and local times the same way
SET TimeZone = 'Asia/Tokyo';
CREATE TEMP TABLE ny_stats_tokyo AS
SELECT customer, (loyalty.rfm_stats(ordered_at, amount, '2026-12-01 00:00-05')).*
FROM sem.ny GROUP BY 1;
SET TimeZone = 'UTC';
SELECT customer, (loyalty.rfm_stats(ordered_on, amount, '2026-12-01 00:00-05')).last_order AS from_date,
	   (loyalty.rfm_stats(ordered_at, amount, '2026-12-01 00:00-05')).last_order AS from_timestamp
FROM sem.ny WHERE customer = 'a' GROUP BY 1;
SELECT count(*) AS tokyo_differs_stats
FROM (SELECT * FROM ny_stats_tokyo EXCEPT
	  SELECT customer, (loyalty.rfm_stats(ordered_at, amount, '2026-12-01 00:00-05')).*
	  FROM sem.ny GROUP BY 1) x;

-- live: day buckets are New York days (of a timestamptz column too); live
-- agrees with batch on both
SELECT * FROM loyalty.track_orders('sem.ny', 'customer', 'paid_at', 'amount');
SELECT customer_id, days FROM loyalty.customer_stats ORDER BY 1;
SELECT customers FROM loyalty.refresh_segments('2026-12-01 00:00-05');
SELECT * FROM sem.live_vs_batch('sem.ny', 'customer', 'paid_at', 'amount', '2026-12-01 00:00-05');
SELECT * FROM sem.live_vs_batch('sem.ny', 'customer', 'ordered_at', 'amount', '2026-12-01 00:00-05');

-- the program zone changes after tracking started: the buckets are New
-- York days, so refresh_segments and track_orders refuse (55000) until
-- rebuild_tracking counts them again; customer_rfm keeps reading them as
-- New York days meanwhile
UPDATE loyalty.settings SET timezone = 'Europe/Paris';
SELECT sem.try($$SELECT * FROM loyalty.refresh_segments('2026-12-02 00:00+01')$$) AS refresh;
SELECT sem.try($$SELECT * FROM loyalty.track_orders('sem.more_orders', 'customer', 'ordered_at', 'amount')$$)
	AS track;
SELECT days FROM loyalty.customer_stats WHERE customer_id = 'a';
SELECT recency_days, frequency FROM loyalty.customer_rfm('a', '2026-12-01 00:00-05');
SELECT * FROM loyalty.rebuild_tracking();
SELECT orders, timezone FROM loyalty.tracked_table;
SELECT customer_id, days FROM loyalty.customer_stats WHERE customer_id IN ('a', 'e') ORDER BY 1;
SELECT customers FROM loyalty.refresh_segments('2026-12-02 00:00+01');
SELECT * FROM sem.live_vs_batch('sem.ny', 'customer', 'paid_at', 'amount', '2026-12-02 00:00+01');
-- the trigger (whose cached zone the rebuild invalidated) buckets new rows
-- in the new zone: 23:30 UTC on 2026-12-01 is 2026-12-02 in Paris
INSERT INTO sem.ny (customer, amount, paid_at) VALUES ('f', 4.00, '2026-12-01 23:30+00');
SELECT (loyalty.fold_tracking()).folded_rows;
SELECT customer_id, days FROM loyalty.customer_stats WHERE customer_id = 'f';

-- clean up
SET client_min_messages = warning;
SELECT loyalty.untrack_orders('sem.ny');
DROP SCHEMA sem CASCADE;
DELETE FROM loyalty.customer_stats;
DELETE FROM loyalty.segment_change;
DELETE FROM loyalty.segment_summary;
DELETE FROM loyalty.segment_snapshot;
DELETE FROM loyalty.settings;
RESET client_min_messages;
