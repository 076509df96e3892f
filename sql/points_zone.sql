--
-- the points calendar runs in the program time zone, loyalty.settings
-- (issue 13: points_program.timezone is gone): expiry dates, the expiry
-- date of points_balance, tier-window months and points_liability follow a
-- zone set there, in this session and the next, without a reconnect.
--
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';

CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE q;
	RETURN 'ok';
EXCEPTION WHEN others THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- points expire at the end of the month after the month they were earned in
INSERT INTO loyalty.points_program (expiry_months, expiry_rounding, tier_window_months) VALUES (1, 'month', 1);
INSERT INTO loyalty.tier (name, rank, threshold) VALUES ('Member', 0, 0), ('Plus', 1, 15);

-- no settings row: UTC.  2026-01-31 23:30 UTC is in January
SELECT points FROM loyalty.earn_points('utc', 10, 'Z-1', at => '2026-01-31 23:30+00');
SELECT l.expires_at FROM loyalty.points_lot l WHERE l.customer_id = 'utc';
SELECT next_expiry_date, next_expiry_points FROM loyalty.points_balance('utc', '2026-02-01');

-- Paris: the same instant is 2026-02-01 00:30, in February
INSERT INTO loyalty.settings (timezone) VALUES ('Europe/Paris');
SELECT points FROM loyalty.earn_points('paris', 10, 'Z-2', at => '2026-01-31 23:30+00');
SELECT l.expires_at FROM loyalty.points_lot l WHERE l.customer_id = 'paris';
SELECT next_expiry_date, next_expiry_points FROM loyalty.points_balance('paris', '2026-02-01');
-- the expiry date of the UTC lot, read in Paris: its last usable day there
SELECT next_expiry_date FROM loyalty.points_balance('utc', '2026-02-01');
SELECT expiry_month, customers, available FROM loyalty.points_liability ORDER BY 1;

-- tier windows: months in the program zone.  10 points earned on
-- 2026-02-28 23:30 UTC count for March in Tokyo (a one-month window): with
-- 10 more in March, 20 points reach Plus (in UTC they would count 10)
UPDATE loyalty.settings SET timezone = 'Asia/Tokyo';
SELECT points FROM loyalty.earn_points('tokyo', 10, 'Z-3', at => '2026-02-28 23:30+00');
SELECT points FROM loyalty.earn_points('tokyo', 10, 'Z-4', at => '2026-03-02');
SELECT tier, qualifying FROM loyalty.tier_progress('tokyo', '2026-03-02');
SELECT month, points FROM loyalty.points_qualifying WHERE customer_id = 'tokyo' ORDER BY 1;

-- a new session reads the zone too
UPDATE loyalty.settings SET timezone = 'America/New_York';
\c
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
SELECT points FROM loyalty.earn_points('ny', 10, 'Z-5', at => '2026-02-01 03:00+00');   -- still January there
SELECT l.expires_at FROM loyalty.points_lot l WHERE l.customer_id = 'ny';

-- the zone lives in loyalty.settings only
SELECT count(*) AS timezone_columns FROM pg_attribute
WHERE attrelid = 'loyalty.points_program'::regclass AND attname = 'timezone' AND NOT attisdropped;
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE q;
	RETURN 'ok';
EXCEPTION WHEN others THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
SELECT pg_temp.err($$UPDATE loyalty.settings SET timezone = 'Mars/Olympus'$$) AS unknown_zone;

SELECT * FROM loyalty.check_integrity();

-- clean up: the ledger cannot be emptied, so start the extension afresh
DROP EXTENSION loyalty;
CREATE EXTENSION loyalty;
