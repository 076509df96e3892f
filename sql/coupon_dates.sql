--
-- coupon_dates: a date-only campaign end (ends_on) runs through that day in
-- the program time zone (loyalty.settings), whatever the session's TimeZone
-- (issue 13 item 9).  ends_at stays an instant (exclusive), as in 0.2.0.
--
SET TimeZone = 'America/New_York';
INSERT INTO loyalty.settings (timezone) VALUES ('Asia/Tokyo');
SELECT (now() AT TIME ZONE 'Asia/Tokyo')::date AS tokyo_today \gset

-- through the whole day in Tokyo: valid today, expired once the day is over
SELECT loyalty.create_campaign('date today', 'fixed', amount_off => 5, ends_on => :'tokyo_today') AS c_today \gset
SELECT loyalty.create_campaign('date yesterday', 'fixed', amount_off => 5,
							   ends_on => :'tokyo_today'::date - 1) AS c_yday \gset
SELECT loyalty.add_public_code(:c_today, 'DAYTODAY'), loyalty.add_public_code(:c_yday, 'DAYYESTERDAY');
SELECT * FROM loyalty.validate_coupon('DAYTODAY', 'ann', 20.00);
SELECT * FROM loyalty.validate_coupon('DAYYESTERDAY', 'ann', 20.00);
SELECT loyalty.redeem_coupon('DAYTODAY', 'ann', 'date-1', 20.00);
SELECT discount FROM loyalty.reserve_coupon('DAYTODAY', 'ann', 'date-2', 20.00);

-- ends_at holds the end instant: the next midnight in Tokyo, not in New York
SELECT ends_on = :'tokyo_today' AS ends_on,
	   ends_at = pg_catalog.timezone('Asia/Tokyo', (:'tokyo_today'::date + 1)::timestamp) AS ends_at_tokyo_midnight
FROM loyalty.campaign WHERE campaign_id = :c_today;
SELECT name, status FROM loyalty.campaign_stats WHERE campaign_id IN (:c_today, :c_yday) ORDER BY name;

-- the program zone decides at every call: a date that is today at UTC-11 is
-- already over at UTC+14 (25 hours ahead)
UPDATE loyalty.settings SET timezone = 'Pacific/Pago_Pago';
SELECT loyalty.create_campaign('date pago', 'fixed', amount_off => 5,
							   ends_on => (now() AT TIME ZONE 'Pacific/Pago_Pago')::date) AS c_pago \gset
SELECT loyalty.add_public_code(:c_pago, 'DAYPAGO');
SELECT valid, reason FROM loyalty.validate_coupon('DAYPAGO', 'ann', 20.00);
UPDATE loyalty.settings SET timezone = 'Pacific/Kiritimati';
SELECT valid, reason FROM loyalty.validate_coupon('DAYPAGO', 'ann', 20.00);
SELECT status FROM loyalty.campaign_stats WHERE campaign_id = :c_pago;
DO $$
BEGIN
	PERFORM loyalty.redeem_coupon('DAYPAGO', 'ann', 'date-3', 20.00);
EXCEPTION WHEN OTHERS THEN
	RAISE NOTICE '% %', SQLSTATE, SQLERRM;
END $$;

-- ends_at and ends_on are one or the other
SELECT loyalty.create_campaign('date both', 'fixed', amount_off => 5, ends_at => now(), ends_on => current_date);
SELECT loyalty.update_campaign(:c_pago, '{"ends_at": "2030-01-01 00:00+00"}');
SELECT ends_on, ends_at AT TIME ZONE 'UTC' AS ends_at_utc FROM loyalty.campaign WHERE campaign_id = :c_pago;
SELECT loyalty.update_campaign(:c_pago, '{"ends_on": "2030-06-30"}');
SELECT ends_on, ends_at AT TIME ZONE 'UTC' AS ends_at_utc FROM loyalty.campaign WHERE campaign_id = :c_pago;
SELECT loyalty.update_campaign(:c_pago, '{"ends_on": null}');
SELECT ends_on, ends_at FROM loyalty.campaign WHERE campaign_id = :c_pago;
SELECT loyalty.update_campaign(:c_pago, '{"ends_on": "2030-06-30", "ends_at": "2030-01-01"}');

-- a 0.2.0 caller: ends_at given a date is still that instant (midnight in
-- the session zone), exclusive; ends_on stays null
SELECT loyalty.create_campaign('date legacy', 'fixed', amount_off => 5, ends_at => '2031-03-31') AS c_legacy \gset
SELECT ends_on, ends_at AT TIME ZONE 'UTC' AS ends_at_utc FROM loyalty.campaign WHERE campaign_id = :c_legacy;

DELETE FROM loyalty.settings;
RESET TimeZone;
