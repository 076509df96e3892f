-- dump/restore state of the coupon tables: a campaign with a rule, public
-- and generated (bound) codes, redemptions with a reversal, a reservation,
-- and a registered rule kind (user data of loyalty.eligibility_kind).
\set ON_ERROR_STOP 1
CREATE FUNCTION public.dump_vip(customer_id text, params jsonb, order_context jsonb)
RETURNS boolean LANGUAGE sql STABLE AS $$ SELECT $1 LIKE 'vip%' $$;
INSERT INTO loyalty.eligibility_kind (kind, check_function, description)
VALUES ('dump_vip', 'public.dump_vip(text, jsonb, jsonb)', 'dump test kind');
SELECT loyalty.create_campaign('dump campaign', 'percent', percent_off => 10, total_cap => 100,
							   new_customers_only => false, segments => NULL) AS c \gset
SELECT loyalty.add_campaign_rule(:c, 'dump_vip');
SELECT loyalty.add_public_code(:c, 'DUMPCODE');
SELECT loyalty.generate_codes(:c, 3, 'DMP-####', ARRAY['vip-1', 'vip-2', 'vip-3']);
SELECT loyalty.redeem_coupon('DUMPCODE', 'vip-1', 'dump-o1', 50.00);
SELECT loyalty.redeem_coupon('DUMPCODE', 'vip-2', 'dump-o2', 50.00);
SELECT loyalty.rollback_redemption('dump-o2');
SELECT * FROM loyalty.reserve_coupon('DUMPCODE', 'vip-3', 'dump-o3', 50.00, '1 hour');
