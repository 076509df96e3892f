-- Points: settings, tiers, rules and a ledger with every kind of entry
-- (earn, rule earnings with caps, pending and expiring lots, spend, reverse
-- with debt, adjustment, expiry), tier history; the restore must bring back
-- every row, the sequences (new entries continue after the restored ones)
-- and a clean integrity check.
INSERT INTO loyalty.settings (timezone) VALUES ('Europe/Paris')
ON CONFLICT (singleton) DO UPDATE SET timezone = EXCLUDED.timezone;
INSERT INTO loyalty.points_program (expiry_months, expiry_rounding) VALUES (12, 'month');
INSERT INTO loyalty.tier (name, rank, threshold, multiplier) VALUES ('Bronze', 0, 0, 1), ('Silver', 1, 100, 1.5);
INSERT INTO loyalty.earning_rule (name, event, points_per_unit, pending_days) VALUES ('base', 'purchase', 1, 30);
INSERT INTO loyalty.earning_rule (name, event, fixed_points, cap_points, cap_period) VALUES ('review', 'review', 10, 10, 'month');
DO $$
BEGIN
	PERFORM loyalty.earn_points('d1', 80, 'd1-welcome', at => '2026-01-01');
	PERFORM loyalty.earn_for_order('d1', 'd1-order', 120, at => '2026-01-02');
	PERFORM loyalty.earn_for_action('d1', 'review', 'd1-review', at => '2026-01-03');
	PERFORM loyalty.spend_points('d1', 50, 'd1-cart', at => '2026-01-04');
	PERFORM loyalty.earn_points('d2', 40, 'd2-old', expires_at => '2026-02-01', at => '2026-01-01');
	PERFORM loyalty.earn_points('d2', 30, 'd2-order', at => '2026-01-01');
	PERFORM loyalty.spend_points('d2', 60, 'd2-cart', at => '2026-01-02');
	PERFORM loyalty.reverse_points('d2-order', at => '2026-01-03');
	PERFORM loyalty.adjust_points('d2', 5, 'd2-fix', 'goodwill', at => '2026-01-04');
	PERFORM loyalty.expire_points('2026-03-01');
	-- a reward exchanged for a coupon, a coupon bonus, a tier rule
	INSERT INTO loyalty.points_reward (campaign_id, points)
	VALUES (loyalty.create_campaign('Points voucher (dump check)', 'fixed', amount_off => 5), 20);
	PERFORM loyalty.exchange_points('d1', (SELECT max(campaign_id) FROM loyalty.points_reward), 'd1-swap', at => '2026-03-01');
	INSERT INTO loyalty.coupon_bonus (campaign_id, points)
	SELECT max(campaign_id), 15 FROM loyalty.points_reward;
	PERFORM loyalty.add_campaign_rule((SELECT max(campaign_id) FROM loyalty.points_reward), 'tier', '{"min_tier": "Bronze"}');
	PERFORM loyalty.evaluate_tiers_batch('2026-03-01', NULL, 100);
	IF EXISTS (SELECT 1 FROM loyalty.check_integrity()) THEN
		RAISE EXCEPTION 'points state to dump is not consistent';
	END IF;
END $$;
