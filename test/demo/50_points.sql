-- Demo part 50: points and tiers on the sample shop.
--
-- Three years of the shop are replayed in time order through the API (every
-- call with its business time): signup and birthday bonuses, points on
-- every order (pending during a 14-day return window), a voucher of 500
-- points whenever a customer holds 1,000, refunds reversed, and on the first
-- of each month the expiry job and the tier evaluation.  Then, on
-- 2026-11-01: the tiers, one customer's statement, a spend and an earning in
-- one app transaction, its refund, the expiry run and the integrity check.
\pset footer off
SET search_path = loyalty, public;

\echo
\echo '=== points and tiers ==='
\echo
\echo '--- the program: Paris time; points expire at the end of the month, 12 months after earning ---'
INSERT INTO settings (timezone) VALUES ('Europe/Paris')
ON CONFLICT (singleton) DO UPDATE SET timezone = EXCLUDED.timezone;
INSERT INTO points_program (tier_basis, tier_window_months, tier_grace_days, expiry_months, expiry_rounding)
VALUES ('points', 12, 60, 12, 'month');
INSERT INTO tier (name, rank, threshold, multiplier, discount, perks) VALUES
	('Bronze', 0, 0, 1, 0, '{}'),
	('Silver', 1, 500, 1.25, 5, '{"free_shipping": true}'),
	('Gold', 2, 1500, 1.5, 10, '{"free_shipping": true, "early_access": true}'),
	('Platinum', 3, 3000, 2, 15, '{"free_shipping": true, "early_access": true, "concierge": true}');
SELECT name AS tier, threshold AS "qualifying points (12 months)", multiplier, discount AS "discount %", perks
FROM tier ORDER BY rank;

INSERT INTO earning_rule (name, event, points_per_unit, pending_days, description) VALUES
	('base', 'purchase', 1, 14, '1 point per EUR, available after the 14-day return window');
INSERT INTO earning_rule (name, event, points_per_unit, pending_days, apply_tier_multiplier, valid_from, valid_until, description) VALUES
	('black friday', 'purchase', 1, 14, false, '2025-11-28 00:00+01', '2025-12-01 00:00+01', 'double points over the Black Friday weekend');
INSERT INTO earning_rule (name, event, fixed_points, cap_points, cap_period, qualifying, description) VALUES
	('welcome', 'signup', 100, 100, 'lifetime', false, 'once per customer'),
	('birthday', 'birthday', 200, 200, 'year', false, 'once a year');
SELECT name AS rule, event, points_per_unit AS "per EUR", fixed_points AS fixed,
	   CASE WHEN apply_tier_multiplier THEN 'x tier' END AS tier_bonus,
	   cap_points || ' / ' || cap_period AS cap, pending_days AS pending,
	   CASE WHEN qualifying THEN 'yes' ELSE 'no' END AS qualifying, description
FROM earning_rule ORDER BY rule_id;

\echo
\echo '--- replaying three years: every signup, order, birthday and refund, in time order ---'
DO $$
DECLARE
	e record;
BEGIN
	FOR e IN
		SELECT * FROM (
			-- the monthly jobs (expiry, tier evaluation) on the first, Paris time
			SELECT m AS at, 0 AS kind, NULL::text AS c, NULL::text AS ref, NULL::numeric AS amount
			FROM generate_series(timestamptz '2023-12-01 00:00 Europe/Paris',
								 timestamptz '2026-10-01 00:00 Europe/Paris', interval '1 month') m
			UNION ALL
			SELECT signup_at, 1, customer_id::text, 'signup-' || customer_id, NULL FROM shop.customers
			UNION ALL
			SELECT ordered_at, 2, customer_id::text, 'order-' || order_id, amount
			FROM shop.orders WHERE status IN ('completed', 'refunded')
			UNION ALL
			SELECT ordered_at + interval '10 days', 3, customer_id::text, 'order-' || order_id, NULL
			FROM shop.orders WHERE status = 'refunded' AND ordered_at + interval '10 days' < '2026-11-01'
			UNION ALL
			SELECT b.at, 4, c.customer_id::text, 'birthday-' || c.customer_id || '-' || y, NULL
			FROM shop.customers c, generate_series(2024, 2026) y,
				 LATERAL (SELECT (make_date(y, extract(month FROM c.birth_date)::int,
											least(extract(day FROM c.birth_date)::int, 28))
								  + time '09:00') AT TIME ZONE 'Europe/Paris' AS at) b
			WHERE c.birth_date IS NOT NULL AND b.at > c.signup_at AND b.at < '2026-11-01'
		) ev
		ORDER BY at, kind, ref
	LOOP
		CASE e.kind
			WHEN 0 THEN
				PERFORM loyalty.expire_points(e.at);
				PERFORM loyalty.evaluate_tiers_batch(e.at, NULL, 1000000);
			WHEN 1 THEN
				PERFORM loyalty.points_earn_for_action(e.c, e.ref, 'signup', at => e.at);
			WHEN 2 THEN
				-- a 500-point voucher on the order when the customer holds 1,000
				IF (SELECT available FROM loyalty.points_balance(e.c, e.at)) >= 1000 THEN
					PERFORM loyalty.points_spend(e.c, e.ref, 500, at => e.at);
				END IF;
				PERFORM loyalty.points_earn_for_order(e.c, e.ref, e.amount, at => e.at, currency => 'EUR');
			WHEN 3 THEN
				PERFORM loyalty.points_reverse(e.c, e.ref, at => e.at);
			WHEN 4 THEN
				PERFORM loyalty.points_earn_for_action(e.c, e.ref, 'birthday', at => e.at);
		END CASE;
	END LOOP;
END $$;

SELECT kind AS entry, count(*) AS entries, sum(points) AS points,
	   count(DISTINCT customer_id) AS customers
FROM points_ledger GROUP BY kind
ORDER BY array_position(ARRAY['earn', 'spend', 'reverse', 'expire', 'adjust'], kind);

\echo
\echo '--- the monthly expiry run of 2026-11-01 (lots past their date, pending lots past the return window) ---'
SELECT * FROM expire_points('2026-11-01 00:00+01');
\echo 'outstanding points by the month they can last be used (the next six):'
SELECT to_char(expiry_month, 'YYYY-MM') AS "usable until end of", customers, available, pending
FROM points_liability
WHERE expiry_month < '2027-05-01' ORDER BY expiry_month;

\echo
\echo '--- tiers on 2026-11-01 (12-month qualifying points; downgrades one step after a 60-day grace) ---'
SELECT upgrades, downgrades FROM evaluate_tiers_batch('2026-11-01 00:00+01', NULL, 1000000);
SELECT coalesce(tier, '(none)') AS tier, customers, share_pct AS "share %" FROM tier_distribution ORDER BY rank;
SELECT extract(year FROM changed_at)::int AS year,
	   count(*) FILTER (WHERE change = 'upgrade') AS upgrades,
	   count(*) FILTER (WHERE change = 'downgrade') AS downgrades
FROM tier_history WHERE change <> 'initial' GROUP BY 1 ORDER BY 1;

\echo
\echo '--- the most loyal customer: balance, tier progress and last statement lines ---'
SELECT customer_id AS top_customer FROM points_account
ORDER BY lifetime_earned DESC, customer_id LIMIT 1 \gset
SELECT :'top_customer' AS customer, b.*, p.message
FROM points_balance(:'top_customer', '2026-11-01 00:00+01') b,
	 tier_progress(:'top_customer', '2026-11-01 00:00+01') p;
SELECT * FROM (
	SELECT entry_id, to_char(effective_at AT TIME ZONE 'Europe/Paris', 'YYYY-MM-DD HH24:MI') AS "when (Paris)",
		   kind, reference, points, available_after AS available, pending_after AS pending
	FROM points_ledger WHERE customer_id = :'top_customer'
	ORDER BY entry_id DESC LIMIT 8) s
ORDER BY entry_id;

\echo
\echo '--- a checkout in one app transaction: a 300-point voucher and the points of the order ---'
\echo 'BEGIN; INSERT INTO orders ...; points_spend(...); points_earn_for_order(...); COMMIT;'
BEGIN;
-- (the shop inserts its order here, in the same transaction)
SELECT * FROM points_spend(:'top_customer', 'order-900001', 300, at => '2026-11-01 10:00+01');
SELECT * FROM points_earn_for_order(:'top_customer', 'order-900001', 249.90, at => '2026-11-01 10:00+01', currency => 'EUR');
COMMIT;
\echo 'a retry of the same call (network timeout) returns the first result, nothing is credited twice:'
SELECT * FROM points_earn_for_order(:'top_customer', 'order-900001', 249.90, at => '2026-11-01 10:05+01', currency => 'EUR');

\echo
\echo '--- the customer returns the order: earned points taken back, voucher points returned ---'
SELECT * FROM points_reverse(:'top_customer', 'order-900001', at => '2026-11-05 15:00+01');
SELECT entry_id, kind, points, lot_ids, lot_points, reverses
FROM points_ledger WHERE reference = 'order-900001' ORDER BY entry_id;

\echo
\echo '--- a short balance is refused with SQLSTATE LP001 (available points in the detail) ---'
\set ON_ERROR_STOP off
SELECT * FROM points_spend(:'top_customer', 'order-900002', 1000000, at => '2026-11-05 16:00+01');
\set ON_ERROR_STOP on

\echo
\echo '--- points for a coupon: the reward catalogue offers a 10 EUR voucher for 800 points ---'
SELECT create_campaign('Points voucher 10 EUR', 'fixed', amount_off => 10) AS voucher \gset
INSERT INTO points_reward (campaign_id, points, code_pattern, description)
VALUES (:voucher, 800, 'PTS-####-####', '10 EUR off for 800 points');
\echo 'the exchange spends the points and issues a single-use code bound to the customer (code not shown: random):'
SELECT points, available, code ~ '^PTS-' AS code_issued
FROM points_exchange(:'top_customer', 'reward-1', :voucher, at => '2026-11-06 09:00+01');
SELECT code AS voucher_code FROM points_exchange WHERE reference = 'reward-1' \gset

\echo
\echo '--- a members-only coupon (Gold and up) that also earns 100 bonus points, used at checkout ---'
SELECT create_campaign('Gold members 15%', 'percent', percent_off => 15) AS members \gset
SELECT add_campaign_rule(:members, 'tier', '{"min_tier": "Gold"}') IS NOT NULL AS tier_rule;
SELECT add_public_code(:members, 'GOLD15') AS public_code;
INSERT INTO coupon_bonus (campaign_id, points, description) VALUES (:members, 100, '100 points for using GOLD15');
SELECT customer_id AS bronze_customer FROM points_account WHERE tier = 'Bronze' ORDER BY customer_id LIMIT 1 \gset
SELECT c AS customer, (SELECT tier FROM points_account WHERE customer_id = c) AS tier, v.valid, v.reason
FROM (VALUES (:'top_customer'), (:'bronze_customer')) t(c), coupon_validate(c, 'GOLD15', '{"amount": 150.00}') v;
\echo 'BEGIN; coupon_redeem(voucher); coupon_redeem(GOLD15); points_earn_for_order(...); points_earn_coupon_bonus(...); COMMIT;'
BEGIN;
SELECT coupon_redeem(:'top_customer', 'order-900003', :'voucher_code', '{"amount": 150.00}') AS voucher_discount,
	   coupon_redeem(:'top_customer', 'order-900003', 'GOLD15', '{"amount": 150.00}') AS members_discount;
SELECT points, available, pending FROM points_earn_for_order(:'top_customer', 'order-900003', 125.00, at => '2026-11-06 10:00+01', currency => 'EUR');
SELECT points, available, pending FROM points_earn_coupon_bonus(:'top_customer', 'order-900003', at => '2026-11-06 10:00+01');
COMMIT;

\echo
\echo '--- integrity: balance = open lots = ledger sum, for every account ---'
SELECT count(*) AS accounts, sum(available) AS available, sum(pending) AS pending, sum(debt) AS debt,
	   (SELECT count(*) FROM check_integrity()) AS problems
FROM points_account;
