-- Data of every 0.2.0 table, for test/scripts/upgrade_data.sh.
--
-- The library installed is the current one, which serves the current schema:
-- the coupon and points calls of 0.2.0 cannot run against a 0.2.0 schema
-- (segments and tracking can; they go through the API in the dump/restore
-- fills).  So the coupon and points rows are written directly, as 0.2.0's
-- own calls wrote them: one consistent ledger (lots, entries and accounts
-- agree, as check_integrity() requires), a campaign with codes, redemptions,
-- a reversal, an open reservation, a points reward with its exchange.
\set ON_ERROR_STOP 1
INSERT INTO loyalty.points_program (timezone, expiry_months, expiry_rounding) VALUES ('Europe/Paris', 12, 'month');
INSERT INTO loyalty.tier (name, rank, threshold, multiplier) VALUES ('Bronze', 0, 0, 1), ('Silver', 1, 100, 1.5);
INSERT INTO loyalty.earning_rule (name, event, points_per_unit, pending_days) VALUES ('base', 'purchase', 1, 30);
INSERT INTO loyalty.earning_rule (name, event, fixed_points, cap_points, cap_period) VALUES ('review', 'review', 10, 10, 'month');

-- a campaign with a public code and three codes bound to customers
INSERT INTO loyalty.campaign (campaign_id, name, kind, currency, percent_off, total_cap, uses)
OVERRIDING SYSTEM VALUE
VALUES (1, 'upgrade campaign', 'percent', 'EUR', 10, 100, 1),
	   (2, 'points voucher', 'fixed', 'EUR', NULL, NULL, 0);
UPDATE loyalty.campaign SET amount_off = 5 WHERE campaign_id = 2;
INSERT INTO loyalty.campaign_rule (rule_id, campaign_id, kind, params)
OVERRIDING SYSTEM VALUE
VALUES (1, 1, 'tier', '{"min_tier": "Bronze"}');
INSERT INTO loyalty.coupon (coupon_id, code, campaign_id, customer_id, max_uses, uses, reservations)
OVERRIDING SYSTEM VALUE
VALUES (1, 'UPGRADECODE', 1, NULL, NULL, 1, 1),
	   (2, 'UPG-0001', 1, 'u1', 1, 0, 0),
	   (3, 'UPG-0002', 1, 'u2', 1, 0, 0),
	   (4, 'PTS-0001', 2, 'u1', 1, 0, 0);
INSERT INTO loyalty.coupon_order (order_ref, customer_id, context_hash, amount, currency, state, created_at, updated_at, closed_at)
VALUES ('up-o1', 'u1', 11, 50.00, 'EUR', 'redeemed', '2026-06-01', '2026-06-01', '2026-06-01'),
	   ('up-o2', 'u2', 12, 50.00, 'EUR', 'rolled_back', '2026-06-01', '2026-06-02', '2026-06-02'),
	   ('up-o3', 'u3', 13, 50.00, 'EUR', 'open', '2026-06-03', '2026-06-03', NULL);
INSERT INTO loyalty.redemption (redemption_id, kind, reverses, coupon_id, campaign_id, customer_id, order_ref, uses, discount, on_shipping, currency, created_at)
OVERRIDING SYSTEM VALUE
VALUES (1, 'redeem', NULL, 1, 1, 'u1', 'up-o1', 1, 5.00, false, 'EUR', '2026-06-01'),
	   (2, 'redeem', NULL, 1, 1, 'u2', 'up-o2', 1, 5.00, false, 'EUR', '2026-06-01'),
	   (3, 'rollback', 2, 1, 1, 'u2', 'up-o2', -1, -5.00, false, 'EUR', '2026-06-02');
INSERT INTO loyalty.reservation (reservation_id, coupon_id, campaign_id, customer_id, order_ref, discount, on_shipping, created_at, expires_at)
OVERRIDING SYSTEM VALUE
VALUES (1, 1, 1, 'u3', 'up-o3', 5.00, false, '2026-06-03', '2100-01-01');

-- points: u1 earned 100 (one lot), spent 30 on an exchange; u2 earned 40
INSERT INTO loyalty.points_reward (campaign_id, points) VALUES (2, 30);
INSERT INTO loyalty.coupon_bonus (campaign_id, points) VALUES (1, 15);
INSERT INTO loyalty.points_account (customer_id, available, lifetime_earned, qualifying, tier, tier_since, next_event_at)
VALUES ('u1', 70, 100, 100, 'Silver', '2026-06-01', '2027-07-01'), ('u2', 40, 40, 40, 'Bronze', '2026-06-01', '2027-07-01');
INSERT INTO loyalty.points_lot (lot_id, customer_id, state, points, remaining, earned_at, expires_at)
OVERRIDING SYSTEM VALUE
VALUES (1, 'u1', 'available', 100, 70, '2026-06-01', '2027-07-01'),
	   (2, 'u2', 'available', 40, 40, '2026-06-01', '2027-07-01');
INSERT INTO loyalty.points_ledger (entry_id, customer_id, kind, points, reference, qualifying, lot_ids, lot_points,
								   available_after, pending_after, debt_after, effective_at)
OVERRIDING SYSTEM VALUE
VALUES (1, 'u1', 'earn', 100, 'u1-order', 100, '{1}', '{100}', 100, 0, 0, '2026-06-01'),
	   (2, 'u2', 'earn', 40, 'u2-order', 40, '{2}', '{40}', 40, 0, 0, '2026-06-01'),
	   (3, 'u1', 'spend', -30, 'exchange:u1-swap', 0, '{1}', '{-30}', 70, 0, 0, '2026-06-02');
INSERT INTO loyalty.points_exchange (reference, customer_id, campaign_id, points, coupon_id, code, entry_id, available_after, effective_at)
VALUES ('u1-swap', 'u1', 2, 30, 4, 'PTS-0001', 3, 70, '2026-06-02');
INSERT INTO loyalty.points_qualifying (customer_id, month, points) VALUES ('u1', '2026-06-01', 100), ('u2', '2026-06-01', 40);
INSERT INTO loyalty.points_rule_usage (customer_id, rule_id, period_start, points) VALUES ('u1', 2, '2026-06-01', 10);
INSERT INTO loyalty.tier_history (history_id, customer_id, changed_at, from_tier, to_tier, change, qualifying)
OVERRIDING SYSTEM VALUE
VALUES (1, 'u1', '2026-06-01', NULL, 'Silver', 'upgrade', 100), (2, 'u2', '2026-06-01', NULL, 'Bronze', 'upgrade', 40);
-- identity sequences continue after the ids written here
SELECT setval(c.oid::regclass, 100) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'loyalty' AND c.relkind = 'S' AND c.relname NOT LIKE 'segment%';
