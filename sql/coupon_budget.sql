--
-- coupon_budget: discount budgets and redemption caps per period of coupon
-- campaigns (issue 15, item 6).  validate says why a coupon is refused
-- (budget_exhausted LY017, period_limit LY018, reserved LY013); rollback and
-- partial returns give the budget back; reservations hold part of it; the
-- period is the day / ISO week / month in the program time zone.  The races
-- are in test/isolation/specs/coupon_budget_*.spec.
--
CREATE FUNCTION pg_temp.try(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	r text;
	detail text;
BEGIN
	EXECUTE q INTO r;
	RETURN 'ok: ' || coalesce(r, 'null');
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
	RETURN SQLSTATE || ': ' || SQLERRM || coalesce(' | ' || nullif(detail, ''), '');
END $$;

SELECT loyalty.create_campaign('budget fixed', 'fixed', amount_off => 10) AS cf \gset
SELECT loyalty.add_public_code(:cf, 'BUDGET10') IS NOT NULL AS code_added;

-- arguments checked
SELECT pg_temp.try($$SELECT loyalty.set_campaign_budget(NULL, discount_budget => 1)$$);
SELECT pg_temp.try(format('SELECT loyalty.set_campaign_budget(%s, discount_budget => -1)', :cf));
SELECT pg_temp.try(format('SELECT loyalty.set_campaign_budget(%s, discount_budget => 10.001)', :cf));
SELECT pg_temp.try(format('SELECT loyalty.set_campaign_budget(%s, period => %L)', :cf, 'day'));
SELECT pg_temp.try(format('SELECT loyalty.set_campaign_budget(%s, period => %L, period_cap => 3)', :cf, 'year'));
SELECT pg_temp.try($$SELECT loyalty.set_campaign_budget(999999, discount_budget => 1)$$);

-- a money budget of 25: two redemptions of 10, the third would exceed it
SELECT campaign_id = :cf AS same, discount_budget, period, period_cap, discount_used
FROM loyalty.set_campaign_budget(:cf, discount_budget => 25);
SELECT loyalty.redeem_coupon('BUDGET10', 'c1', 'o1', 100);
SELECT * FROM loyalty.validate_coupon('BUDGET10', 'c2', 100);
SELECT loyalty.redeem_coupon('BUDGET10', 'c2', 'o2', 100);
SELECT * FROM loyalty.validate_coupon('BUDGET10', 'c3', 100);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('BUDGET10', 'c3', 'o3', 100)$$);
SELECT name, discount_budget, discount_used, discount_left FROM loyalty.campaign_budget_status WHERE campaign_id = :cf;
-- a repeat of a redemption returns it, budget or not
SELECT loyalty.redeem_coupon('BUDGET10', 'c2', 'o2', 100);

-- a rollback gives its discount back
SELECT loyalty.rollback_redemption('o2');
SELECT discount_used FROM loyalty.campaign_budget WHERE campaign_id = :cf;
SELECT * FROM loyalty.validate_coupon('BUDGET10', 'c3', 100);

-- a live reservation holds its discount: another checkout is refused with
-- "reserved", the holder can redeem
SELECT discount FROM loyalty.reserve_coupon('BUDGET10', 'c4', 'o4', 100, '10 minutes');
SELECT * FROM loyalty.validate_coupon('BUDGET10', 'c5', 100);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('BUDGET10', 'c5', 'o5', 100)$$);
SELECT loyalty.redeem_coupon('BUDGET10', 'c4', 'o4', 100);
SELECT discount_used, discount_left FROM loyalty.campaign_budget_status WHERE campaign_id = :cf;
SELECT * FROM loyalty.validate_coupon('BUDGET10', 'c5', 100);

-- a budget below what is granted is refused; a bigger one recounts
SELECT pg_temp.try(format('SELECT loyalty.set_campaign_budget(%s, discount_budget => 19.99)', :cf));
SELECT discount_budget, discount_used FROM loyalty.set_campaign_budget(:cf, discount_budget => 40);
SELECT * FROM loyalty.validate_coupon('BUDGET10', 'c5', 100);

-- a percent campaign with item lines: a partial return gives back the
-- discount taken back
SELECT loyalty.create_campaign('budget pct', 'percent', percent_off => 10) AS cp \gset
SELECT loyalty.add_public_code(:cp, 'BUDGETPCT') IS NOT NULL AS code_added;
SELECT discount_budget FROM loyalty.set_campaign_budget(:cp, discount_budget => 5);
SELECT loyalty.redeem_coupon('BUDGETPCT', 'c1', 'p1',
	'{"items": [{"sku": "a", "quantity": 2, "price": 10}, {"sku": "b", "quantity": 1, "price": 20}]}'::jsonb);
SELECT discount_used FROM loyalty.campaign_budget WHERE campaign_id = :cp;
SELECT * FROM loyalty.validate_coupon('BUDGETPCT', 'c2',
	'{"items": [{"sku": "a", "quantity": 1, "price": 20}]}'::jsonb);
SELECT loyalty.coupon_return_lines('c1', 'p1', 'r1', '[{"line": 1, "quantity": 1}]');
SELECT discount_used FROM loyalty.campaign_budget WHERE campaign_id = :cp;
SELECT * FROM loyalty.validate_coupon('BUDGETPCT', 'c2',
	'{"items": [{"sku": "a", "quantity": 1, "price": 20}]}'::jsonb);
-- the rollback of the returned order gives back only what was still granted
SELECT loyalty.rollback_redemption('p1');
SELECT discount_used FROM loyalty.campaign_budget WHERE campaign_id = :cp;

-- a period cap: 2 redemptions per day
SELECT loyalty.create_campaign('budget daily', 'fixed', amount_off => 1) AS cd \gset
SELECT loyalty.add_public_code(:cd, 'BUDGETDAY') IS NOT NULL AS code_added;
SELECT period, period_cap FROM loyalty.set_campaign_budget(:cd, period => 'day', period_cap => 2);
SELECT loyalty.redeem_coupon('BUDGETDAY', 'c1', 'd1', 10);
SELECT loyalty.redeem_coupon('BUDGETDAY', 'c2', 'd2', 10);
SELECT * FROM loyalty.validate_coupon('BUDGETDAY', 'c3', 10);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('BUDGETDAY', 'c3', 'd3', 10)$$);
-- "today" is the program's day (loyalty.settings; an earlier test may have
-- left a zone behind), not the session's
SELECT period, period_cap,
	   period_start = (pg_catalog.now() AT TIME ZONE coalesce((SELECT timezone FROM loyalty.settings), 'UTC'))::date AS today,
	   period_uses, period_left
FROM loyalty.campaign_budget_status WHERE campaign_id = :cd;
SELECT loyalty.rollback_redemption('d1');
SELECT loyalty.redeem_coupon('BUDGETDAY', 'c3', 'd3', 10);
-- the uses of earlier days do not count: move them to yesterday
UPDATE loyalty.campaign_period_use SET period_start = period_start - 1 WHERE campaign_id = :cd;
SELECT * FROM loyalty.validate_coupon('BUDGETDAY', 'c4', 10);
-- setting the cap again recounts today's redemptions from the ledger
SELECT period_cap FROM loyalty.set_campaign_budget(:cd, period => 'day', period_cap => 2);
SELECT period_uses, period_left FROM loyalty.campaign_budget_status WHERE campaign_id = :cd;
SELECT * FROM loyalty.validate_coupon('BUDGETDAY', 'c4', 10);

-- period starts in the program time zone: ISO weeks start on Monday,
-- months on the first, days at local midnight
SELECT loyalty._campaign_period_start('week', '2026-12-06 12:00+00'),
	   loyalty._campaign_period_start('week', '2026-12-07 00:30+00'),
	   loyalty._campaign_period_start('month', '2026-12-31 23:30+00'),
	   loyalty._campaign_period_start('day', '2026-12-31 23:30+00');
INSERT INTO loyalty.settings (timezone) VALUES ('Europe/Paris');
SELECT loyalty._campaign_period_start('month', '2026-12-31 23:30+00'),
	   loyalty._campaign_period_start('day', '2026-12-06 23:30+00'),
	   loyalty._campaign_period_start('week', '2026-12-06 23:30+00');
DELETE FROM loyalty.settings;

-- a zero period cap stops the campaign for now (a soft pause)
SELECT period_cap FROM loyalty.set_campaign_budget(:cd, period => 'week', period_cap => 0);
SELECT * FROM loyalty.validate_coupon('BUDGETDAY', 'c5', 10);
-- removing the budget removes both limits
SELECT loyalty.set_campaign_budget(:cd) IS NULL AS removed;
SELECT count(*) FROM loyalty.campaign_budget WHERE campaign_id = :cd;
SELECT * FROM loyalty.validate_coupon('BUDGETDAY', 'c5', 10);

