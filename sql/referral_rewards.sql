--
-- referral rewards beyond points: coupons bound to the referrer and the
-- referee (pending until the return window closes, issued by
-- referral_settle / referral_coupons, cancelled or voided by a refund), the
-- referee's first-order discount (a code bound to them at the join), and
-- the first qualifying purchase seen by the order tracking (the tracking
-- trigger's order feed, folded by mission_fold) as well as reported by
-- referral_order.  (Named to run after the points tests.)
--
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
BEGIN;

SELECT loyalty.create_campaign('Referrer thanks', 'fixed', amount_off => 10) AS c_referrer \gset
SELECT loyalty.create_campaign('Welcome friend', 'fixed', amount_off => 5) AS c_referee \gset
SELECT loyalty.create_campaign('First order -20%', 'percent', percent_off => 20, new_customers_only => true) AS c_first \gset
INSERT INTO loyalty.referral_program (program, referrer_points, referee_points, return_window_days,
									  min_order_amount, new_customers_only, referrer_campaign_id,
									  referee_campaign_id, first_order_campaign_id, coupon_pattern)
VALUES ('pals', 100, 50, 14, 20, true, :c_referrer, :c_referee, :c_first, 'PAX-####-####');
SELECT loyalty.referral_code('ann', 'pals') AS ann_code \gset

CREATE TEMP VIEW rewards AS
SELECT c.customer_id AS holder, c.referee_id, c.role, c.status, c.available_at,
	   c.code LIKE 'PAX-____-____-%' AS has_code,
	   k.customer_id AS bound_to, k.voided_at IS NOT NULL AS voided,
	   CASE k.campaign_id WHEN :c_referrer THEN 'referrer' WHEN :c_referee THEN 'referee'
						  WHEN :c_first THEN 'first_order' END AS campaign
FROM loyalty.referral_coupon c LEFT JOIN loyalty.coupon k USING (coupon_id);

--
-- the join: the first-order discount, a code bound to the referee, at once
--
SELECT program, referrer_id, status FROM loyalty.referral_join('zoe', 'signup-zoe', :'ann_code', at => '2026-03-01');
SELECT * FROM rewards ORDER BY holder, referee_id, role;
SELECT code AS zoe_first FROM loyalty.referral_coupon WHERE referee_id = 'zoe' AND role = 'first_order' \gset
-- usable by the referee only, on a first order (the campaign is for new
-- customers: the checkout passes new_customer)
SELECT valid, reason, discount FROM loyalty.coupon_validate('zoe', :'zoe_first', '{"amount": 50, "new_customer": true}');
SELECT valid, reason FROM loyalty.coupon_validate('zoe', :'zoe_first', '{"amount": 50, "new_customer": false}');
SELECT valid, reason FROM loyalty.coupon_validate('ann', :'zoe_first', '{"amount": 50, "new_customer": true}');
-- a repeated join issues nothing more
SELECT status FROM loyalty.referral_join('zoe', 'signup-zoe', :'ann_code', at => '2026-03-01');
SELECT count(*) AS first_order_codes FROM loyalty.coupon WHERE campaign_id = :c_first;

--
-- the first qualifying purchase: points and coupons for both sides,
-- pending until the return window closes (14 days)
--
SELECT status, referrer_points, referee_points, pending_until
FROM loyalty.referral_order('zoe', 'z-1', 45, at => '2026-03-05');
SELECT * FROM rewards WHERE role <> 'first_order' ORDER BY holder, role;
SELECT referee_id, role, status, available_at, code FROM loyalty.referral_coupons('ann', at => '2026-03-18');
SELECT loyalty.referral_settle(at => '2026-03-18') AS issued_early;
-- the window closed: the codes are issued, bound to each side
SELECT loyalty.referral_settle(at => '2026-03-19') AS issued;
SELECT loyalty.referral_settle(at => '2026-03-20') AS issued_again;
SELECT * FROM rewards WHERE role <> 'first_order' ORDER BY holder, role;
SELECT code AS ann_reward FROM loyalty.referral_coupon WHERE customer_id = 'ann' AND role = 'referrer' \gset
SELECT valid, reason, discount FROM loyalty.coupon_validate('ann', :'ann_reward', '{"amount": 50}');
-- a reward code redeemed: its discount is part of the program's cost
-- (referral_kpi), and a rolled-back order gives it back
SAVEPOINT kpi;
UPDATE loyalty.referral_program SET point_value = 0.01 WHERE program = 'pals';
SELECT points_cost, coupon_cost, cost FROM loyalty.referral_kpi WHERE program = 'pals';
SELECT loyalty.redeem_coupon(:'ann_reward', 'ann', 'ann-kpi-1', 50::numeric) AS discount;
SELECT points_cost, coupon_cost, cost FROM loyalty.referral_kpi WHERE program = 'pals';
SELECT loyalty.rollback_redemption('ann-kpi-1') AS rolled_back;
SELECT points_cost, coupon_cost, cost FROM loyalty.referral_kpi WHERE program = 'pals';
ROLLBACK TO SAVEPOINT kpi;
-- referral_coupons settles its customer itself
SELECT loyalty.referral_join('kim', 'signup-kim', :'ann_code', at => '2026-03-02') IS NOT NULL AS kim_joined;
SELECT status FROM loyalty.referral_order('kim', 'k-1', 30, at => '2026-03-06');
SELECT referee_id, role, status, code LIKE 'PAX-%' AS has_code FROM loyalty.referral_coupons('kim', at => '2026-03-21');

--
-- a refund after the window: the unused reward codes and the first-order
-- code are voided (the points reversed, as before)
--
SELECT status FROM loyalty.referral_refund('zoe', 'z-1', at => '2026-03-25');
SELECT * FROM rewards WHERE referee_id = 'zoe' ORDER BY holder, role;
SELECT valid, reason FROM loyalty.coupon_validate('ann', :'ann_reward', '{"amount": 50}');

--
-- a refund inside the window: the pending coupons are cancelled, no code
-- is ever issued for them
--
SELECT loyalty.referral_join('max', 'signup-max', :'ann_code', at => '2026-04-01') IS NOT NULL AS max_joined;
SELECT status FROM loyalty.referral_order('max', 'm-1', 60, at => '2026-04-02');
SELECT status FROM loyalty.referral_refund('max', 'm-1', at => '2026-04-05');
-- (the one code issued is kim's referrer reward to ann, due since March 20)
SELECT loyalty.referral_settle(at => '2026-05-01') AS issued;
SELECT * FROM rewards WHERE referee_id = 'max' ORDER BY holder, role;
SELECT customer_id, kind, points FROM loyalty.points_ledger
WHERE reference LIKE 'referral:max:%' ORDER BY entry_id;

--
-- the first qualifying purchase seen by the order tracking: no call; the
-- tracking trigger appends the referee's orders (a referral program is
-- active), the fold converts the referral on the first order of at least
-- min_order_amount; deleting that order revokes it
--
CREATE TABLE public.referral_shop_orders (customer text, ordered_at timestamptz, amount numeric);
SELECT tracked_rows FROM loyalty.track_orders('public.referral_shop_orders', 'customer', 'ordered_at', 'amount');
SELECT loyalty.referral_join('lea', 'signup-lea', :'ann_code', at => '2026-05-01') IS NOT NULL AS lea_joined;
INSERT INTO public.referral_shop_orders VALUES ('lea', '2026-05-02', 10);
SELECT loyalty.mission_fold('lea') AS folded;
SELECT status, order_ref FROM loyalty.referral WHERE customer_id = 'lea';
INSERT INTO public.referral_shop_orders VALUES ('lea', '2026-05-03', 30), ('lea', '2026-05-04', 40);
SELECT loyalty.mission_fold() AS folded;
SELECT status, order_ref, order_amount, converted_at, pending_until, referrer_points, referee_points
FROM loyalty.referral WHERE customer_id = 'lea';
SELECT * FROM rewards WHERE referee_id = 'lea' ORDER BY holder, role;
-- the same purchase reported by a call as well: the first result
SELECT status, referee_points FROM loyalty.referral_order('lea', 'tracked:20260503000000000000:30#1', 30, at => '2026-05-03');
-- the qualifying order deleted: revoked, pending coupons cancelled, first-order code voided
DELETE FROM public.referral_shop_orders WHERE customer = 'lea' AND amount = 30;
SELECT loyalty.mission_fold() AS folded;
SELECT status, revoked_at IS NOT NULL AS revoked FROM loyalty.referral WHERE customer_id = 'lea';
SELECT * FROM rewards WHERE referee_id = 'lea' ORDER BY holder, role;
SELECT customer_id, kind, points FROM loyalty.points_ledger WHERE reference LIKE 'referral:lea:%' ORDER BY entry_id;
SELECT * FROM loyalty.check_integrity();

ROLLBACK;
