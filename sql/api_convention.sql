--
-- One API (issue 13, item 7): the consistent names of 0.3.0 (doc/api.md).
--   1. the catalog: one signature per new name, customer_id first, at the
--      first option of every call that takes a business time, the same
--      result type, volatility, parallel label, definer settings and access
--      level as the old name it replaces, old names commented deprecated;
--   2. untyped parameters (node-postgres and JDBC send every parameter as
--      unknown) resolve for every new name, where an old overloaded name
--      is ambiguous (42725);
--   3. every new name gives the results and errors of the old one: the same
--      scenario run twice side by side, under the old names for customers
--      and references prefixed OLD_, under the new ones for NEW_ (results
--      compared without the entry ids, customer ids and reservation times,
--      which differ by construction).
--
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
-- a fresh extension (ids in the output), dropped again at the end
DROP EXTENSION loyalty;
CREATE EXTENSION loyalty;

-- old name -> new name
CREATE TEMP TABLE api_map (old regprocedure, new regprocedure);
INSERT INTO api_map VALUES
	('loyalty.validate_coupon(text, text, jsonb, text)', 'loyalty.coupon_validate(text, text, jsonb, text)'),
	('loyalty.validate_coupon(text, text, numeric, text)', 'loyalty.coupon_validate(text, text, jsonb, text)'),
	('loyalty.reserve_coupon(text, text, text, jsonb, interval)', 'loyalty.coupon_reserve(text, text, text, jsonb, interval)'),
	('loyalty.reserve_coupon(text, text, text, numeric, interval)', 'loyalty.coupon_reserve(text, text, text, jsonb, interval)'),
	('loyalty.redeem_coupon(text, text, text, jsonb)', 'loyalty.coupon_redeem(text, text, text, jsonb)'),
	('loyalty.redeem_coupon(text, text, text, numeric)', 'loyalty.coupon_redeem(text, text, text, jsonb)'),
	('loyalty.rollback_redemption(text)', 'loyalty.coupon_rollback(text, text)'),
	('loyalty.earn_points(text, bigint, text, text, timestamptz, timestamptz, boolean, timestamptz)',
	 'loyalty.points_earn(text, text, bigint, timestamptz, text, timestamptz, timestamptz, boolean)'),
	('loyalty.spend_points(text, bigint, text, timestamptz)', 'loyalty.points_spend(text, text, bigint, timestamptz)'),
	('loyalty.earn_for_order(text, text, numeric, text, timestamptz)', 'loyalty.points_earn_for_order(text, text, numeric, timestamptz, text)'),
	('loyalty.earn_for_action(text, text, text, timestamptz)', 'loyalty.points_earn_for_action(text, text, text, timestamptz)'),
	('loyalty.reverse_points(text, text, timestamptz)', 'loyalty.points_reverse(text, text, timestamptz)'),
	('loyalty.adjust_points(text, bigint, text, text, timestamptz, timestamptz)',
	 'loyalty.points_adjust(text, text, bigint, text, timestamptz, timestamptz)'),
	('loyalty.exchange_points(text, bigint, text, timestamptz)', 'loyalty.points_exchange(text, text, bigint, timestamptz)'),
	('loyalty.earn_coupon_bonus(text, text, timestamptz)', 'loyalty.points_earn_coupon_bonus(text, text, timestamptz)');

--
-- 1. the catalog
--
-- one signature per new name (functions, procedures and aggregates alike)
SELECT q.proname AS new_name, count(*) AS signatures
FROM pg_proc q
WHERE q.pronamespace = 'loyalty'::regnamespace
  AND q.proname IN (SELECT p.proname FROM pg_proc p WHERE p.oid IN (SELECT new FROM api_map))
GROUP BY q.proname ORDER BY 1;

-- the required arguments, the optional ones (with defaults, by name)
SELECT p.proname AS new_name,
	   array_to_string((p.proargnames)[1:p.pronargs - p.pronargdefaults], ', ') AS required,
	   array_to_string((p.proargnames)[p.pronargs - p.pronargdefaults + 1:p.pronargs], ', ') AS optional
FROM pg_proc p WHERE p.oid IN (SELECT new FROM api_map) ORDER BY 1;

-- every new name takes customer_id first
SELECT p.proname AS not_customer_first
FROM pg_proc p WHERE p.oid IN (SELECT new FROM api_map) AND (p.proargnames)[1] <> 'customer_id';

-- at is the first optional argument of every new call that writes and takes
-- a business time; the writes without one (the coupon calls, which run at
-- the transaction's clock) take no optional argument a time converts to
SELECT p.proname AS new_write,
	   (p.proargnames)[p.pronargs - p.pronargdefaults + 1] AS first_optional,
	   CASE WHEN p.pronargdefaults > 0
			THEN format_type((p.proargtypes)[p.pronargs - p.pronargdefaults], NULL) END AS its_type,
	   'at' = ANY ((p.proargnames)[1:p.pronargs]) AS takes_at
FROM pg_proc p
WHERE p.oid IN (SELECT new FROM api_map) AND p.provolatile = 'v'
ORDER BY 1;
SELECT p.proname AS at_not_first_option
FROM pg_proc p
WHERE p.oid IN (SELECT new FROM api_map) AND p.provolatile = 'v'
  AND 'at' = ANY ((p.proargnames)[1:p.pronargs])
  AND (p.pronargdefaults = 0 OR (p.proargnames)[p.pronargs - p.pronargdefaults + 1] <> 'at');

-- same result type (OUT columns too), labels, definer settings, access level
SELECT m.old, m.new
FROM api_map m
JOIN pg_proc o ON o.oid = m.old
JOIN pg_proc n ON n.oid = m.new
WHERE o.prorettype <> n.prorettype
   OR o.proretset <> n.proretset
   OR o.provolatile <> n.provolatile
   OR o.proparallel <> n.proparallel
   OR o.prosecdef <> n.prosecdef
   OR o.proisstrict <> n.proisstrict
   OR o.proconfig IS DISTINCT FROM n.proconfig
   OR pg_get_function_result(o.oid) <> pg_get_function_result(n.oid)
   OR (SELECT array_agg(r.level ORDER BY r.level) FROM loyalty.access_rule r
	   WHERE r.object_type = 'function' AND r.object_name = o.oid::regprocedure::text)
	  IS DISTINCT FROM
	  (SELECT array_agg(r.level ORDER BY r.level) FROM loyalty.access_rule r
	   WHERE r.object_type = 'function' AND r.object_name = n.oid::regprocedure::text);
SELECT n.proname AS new_name, o.provolatile AS volatility, o.proparallel AS parallel, o.prosecdef AS definer,
	   o.proconfig AS config, r.level
FROM api_map m
JOIN pg_proc o ON o.oid = m.old
JOIN pg_proc n ON n.oid = m.new
JOIN loyalty.access_rule r ON r.object_type = 'function' AND r.object_name = n.oid::regprocedure::text
GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1;

-- the old names say what replaces them, and that name exists
SELECT m.old, obj_description(m.old, 'pg_proc') ~ '^Deprecated since 0\.3\.0, use loyalty\.[a-z_]+\(.*\); removed in 0\.4\.0$' AS deprecated,
	   substring(obj_description(m.old, 'pg_proc') FROM 'use (loyalty\.[a-z_]+)\(')::regproc::regprocedure = m.new AS names_its_replacement,
	   obj_description(m.new, 'pg_proc') NOT LIKE 'Deprecated%' AS new_commented
FROM api_map m ORDER BY 1::text;

--
-- 2. untyped parameters
--
-- the old overloaded names are ambiguous for a client that sends unknowns
PREPARE old_validate(unknown, unknown, unknown) AS SELECT * FROM loyalty.validate_coupon($1, $2, $3);
PREPARE old_redeem(unknown, unknown, unknown, unknown) AS SELECT loyalty.redeem_coupon($1, $2, $3, $4);
-- every new name resolves: required arguments positional, options by name
PREPARE v(unknown, unknown, unknown) AS SELECT * FROM loyalty.coupon_validate($1, $2, $3);
PREPARE v_ref(unknown, unknown, unknown, unknown) AS SELECT * FROM loyalty.coupon_validate($1, $2, $3, order_ref => $4);
PREPARE rsv(unknown, unknown, unknown, unknown) AS SELECT discount FROM loyalty.coupon_reserve($1, $2, $3, $4);
PREPARE rsv_ttl(unknown, unknown, unknown, unknown, unknown) AS SELECT discount FROM loyalty.coupon_reserve($1, $2, $3, $4, ttl => $5);
PREPARE rdm(unknown, unknown, unknown, unknown) AS SELECT loyalty.coupon_redeem($1, $2, $3, $4);
PREPARE rbk(unknown, unknown) AS SELECT loyalty.coupon_rollback($1, $2);
PREPARE earn(unknown, unknown, unknown) AS SELECT * FROM loyalty.points_earn($1, $2, $3);
PREPARE earn_opts(unknown, unknown, unknown, unknown, unknown, unknown, unknown, unknown) AS
	SELECT * FROM loyalty.points_earn($1, $2, $3, at => $4, reason => $5, pending_until => $6, expires_at => $7, qualifying => $8);
PREPARE spend(unknown, unknown, unknown, unknown) AS SELECT * FROM loyalty.points_spend($1, $2, $3, at => $4);
PREPARE by_order(unknown, unknown, unknown, unknown, unknown) AS
	SELECT * FROM loyalty.points_earn_for_order($1, $2, $3, at => $4, currency => $5);
PREPARE by_action(unknown, unknown, unknown) AS SELECT * FROM loyalty.points_earn_for_action($1, $2, $3);
PREPARE rev(unknown, unknown, unknown) AS SELECT * FROM loyalty.points_reverse($1, $2, at => $3);
PREPARE adj(unknown, unknown, unknown, unknown, unknown, unknown) AS
	SELECT * FROM loyalty.points_adjust($1, $2, $3, $4, at => $5, expires_at => $6);
PREPARE xchg(unknown, unknown, unknown, unknown) AS
	SELECT code LIKE 'PTS-%' AS issued, points, available FROM loyalty.points_exchange($1, $2, $3, at => $4);
PREPARE bonus(unknown, unknown, unknown) AS SELECT * FROM loyalty.points_earn_coupon_bonus($1, $2, at => $3);
-- each prepared statement calls the new name it was written for
SELECT name, regexp_replace(statement, '^.*(loyalty\.[a-z_]+)\(.*$', '\1', 's') AS calls, parameter_types
FROM pg_prepared_statements ORDER BY name;

--
-- 3. the same scenario under both names
--
CREATE FUNCTION pg_temp.run(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	r text;
BEGIN
	EXECUTE format('SELECT coalesce(jsonb_agg(to_jsonb(t) - %L - %L - %L)::text, %L) FROM (%s) t',
				   'entry_id', 'customer_id', 'expires_at', '(no row)', q) INTO r;
	RETURN regexp_replace(r, '(OLD|NEW)_', '', 'g');
EXCEPTION WHEN others THEN
	RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, '(OLD|NEW)_', '', 'g');
END $$;

CREATE TEMP TABLE trace (step int PRIMARY KEY, what text, old text, new text);
CREATE FUNCTION pg_temp.both(step int, what text, old_q text, new_q text) RETURNS void LANGUAGE sql AS $$
	INSERT INTO trace VALUES (step, what,
		pg_temp.run(replace(old_q, '@', 'OLD_')), pg_temp.run(replace(new_q, '@', 'NEW_')))
$$;

SELECT loyalty.create_campaign('Ten percent', 'percent', percent_off => 10) AS ten \gset
SELECT loyalty.add_public_code(:ten, 'TEN-OFF');
INSERT INTO loyalty.coupon_bonus (campaign_id, points, description) VALUES (:ten, 25, 'use TEN-OFF, get 25 points');
SELECT loyalty.create_campaign('Voucher 5', 'fixed', amount_off => 5) AS voucher \gset
INSERT INTO loyalty.points_reward (campaign_id, points, code_pattern) VALUES (:voucher, 50, 'PTS-####-####');
INSERT INTO loyalty.earning_rule (name, event, points_per_unit) VALUES ('base', 'purchase', 1);
INSERT INTO loyalty.earning_rule (name, event, fixed_points) VALUES ('review', 'review', 20);

-- coupons
SELECT pg_temp.both(1, 'validate, order context',
	$$SELECT * FROM loyalty.validate_coupon('TEN-OFF', '@ann', '{"amount": 120.00}'::jsonb)$$,
	$$SELECT * FROM loyalty.coupon_validate('@ann', 'TEN-OFF', '{"amount": 120.00}')$$);
SELECT pg_temp.both(2, 'validate, amount only',
	$$SELECT * FROM loyalty.validate_coupon('TEN-OFF', '@ann', 80.00)$$,
	$$SELECT * FROM loyalty.coupon_validate('@ann', 'TEN-OFF', '{"amount": 80.00}')$$);
SELECT pg_temp.both(3, 'validate, unknown code',
	$$SELECT * FROM loyalty.validate_coupon('TEN-0FX', '@ann', '{"amount": 80}'::jsonb)$$,
	$$SELECT * FROM loyalty.coupon_validate('@ann', 'TEN-0FX', '{"amount": 80}')$$);
SELECT pg_temp.both(4, 'validate, no customer',
	$$SELECT * FROM loyalty.validate_coupon('TEN-OFF', NULL, '{"amount": 80}'::jsonb)$$,
	$$SELECT * FROM loyalty.coupon_validate(NULL, 'TEN-OFF', '{"amount": 80}')$$);
SELECT pg_temp.both(5, 'validate, bad context',
	$$SELECT * FROM loyalty.validate_coupon('TEN-OFF', '@ann', '{"amount": -1}'::jsonb)$$,
	$$SELECT * FROM loyalty.coupon_validate('@ann', 'TEN-OFF', '{"amount": -1}')$$);
SELECT pg_temp.both(6, 'reserve, amount',
	$$SELECT discount, expires_at > now() AS held FROM loyalty.reserve_coupon('TEN-OFF', '@ann', '@order-1', 50.00)$$,
	$$SELECT discount, expires_at > now() AS held FROM loyalty.coupon_reserve('@ann', '@order-1', 'TEN-OFF', '{"amount": 50.00}')$$);
SELECT pg_temp.both(7, 'reserve, repeat with ttl',
	$$SELECT discount FROM loyalty.reserve_coupon('TEN-OFF', '@ann', '@order-1', 50.00, ttl => '1 hour')$$,
	$$SELECT discount FROM loyalty.coupon_reserve('@ann', '@order-1', 'TEN-OFF', '{"amount": 50.00}', ttl => '1 hour')$$);
SELECT pg_temp.both(8, 'validate, with the order',
	$$SELECT * FROM loyalty.validate_coupon('TEN-OFF', '@ann', '{"amount": 50}'::jsonb, '@order-1')$$,
	$$SELECT * FROM loyalty.coupon_validate('@ann', 'TEN-OFF', '{"amount": 50}', order_ref => '@order-1')$$);
SELECT pg_temp.both(9, 'redeem, changed cart',
	$$SELECT loyalty.redeem_coupon('TEN-OFF', '@ann', '@order-1', 55.00)$$,
	$$SELECT loyalty.coupon_redeem('@ann', '@order-1', 'TEN-OFF', '{"amount": 55.00}')$$);
SELECT pg_temp.both(10, 'redeem the reservation',
	$$SELECT loyalty.redeem_coupon('TEN-OFF', '@ann', '@order-1', '{"amount": 50}'::jsonb) AS discount$$,
	$$SELECT loyalty.coupon_redeem('@ann', '@order-1', 'TEN-OFF', '{"amount": 50}') AS discount$$);
SELECT pg_temp.both(11, 'redeem, repeat',
	$$SELECT loyalty.redeem_coupon('TEN-OFF', '@ann', '@order-1', 50) AS discount$$,
	$$SELECT loyalty.coupon_redeem('@ann', '@order-1', 'TEN-OFF', '{"amount": 50}') AS discount$$);
SELECT pg_temp.both(12, 'reserve after redeem',
	$$SELECT discount FROM loyalty.reserve_coupon('TEN-OFF', '@ann', '@order-1', 50)$$,
	$$SELECT discount FROM loyalty.coupon_reserve('@ann', '@order-1', 'TEN-OFF', '{"amount": 50}')$$);
SELECT pg_temp.both(13, 'redeem, another customer''s order',
	$$SELECT loyalty.redeem_coupon('TEN-OFF', '@bob', '@order-1', 50)$$,
	$$SELECT loyalty.coupon_redeem('@bob', '@order-1', 'TEN-OFF', '{"amount": 50}')$$);
SELECT pg_temp.both(14, 'reserve, bad ttl',
	$$SELECT discount FROM loyalty.reserve_coupon('TEN-OFF', '@ann', '@order-2', 50, ttl => '-1 minute')$$,
	$$SELECT discount FROM loyalty.coupon_reserve('@ann', '@order-2', 'TEN-OFF', '{"amount": 50}', ttl => '-1 minute')$$);
SELECT pg_temp.both(15, 'redeem, no order reference',
	$$SELECT loyalty.redeem_coupon('TEN-OFF', '@ann', NULL, 50)$$,
	$$SELECT loyalty.coupon_redeem('@ann', NULL, 'TEN-OFF', '{"amount": 50}')$$);
SELECT pg_temp.both(16, 'redeem, items',
	$$SELECT loyalty.redeem_coupon('TEN-OFF', '@ann', '@order-3', '{"items": [{"sku": "A", "price": 30, "quantity": 2}]}'::jsonb) AS discount$$,
	$$SELECT loyalty.coupon_redeem('@ann', '@order-3', 'TEN-OFF', '{"items": [{"sku": "A", "price": 30, "quantity": 2}]}') AS discount$$);
SELECT pg_temp.both(17, 'rollback',
	$$SELECT loyalty.rollback_redemption('@order-3') AS rolled_back$$,
	$$SELECT loyalty.coupon_rollback('@ann', '@order-3') AS rolled_back$$);
SELECT pg_temp.both(18, 'rollback, repeat',
	$$SELECT loyalty.rollback_redemption('@order-3') AS rolled_back$$,
	$$SELECT loyalty.coupon_rollback('@ann', '@order-3') AS rolled_back$$);
SELECT pg_temp.both(19, 'rollback, unknown order',
	$$SELECT loyalty.rollback_redemption('@order-9') AS rolled_back$$,
	$$SELECT loyalty.coupon_rollback('@ann', '@order-9') AS rolled_back$$);
SELECT pg_temp.both(20, 'redeem after rollback',
	$$SELECT loyalty.redeem_coupon('TEN-OFF', '@ann', '@order-3', '{"items": [{"sku": "A", "price": 30, "quantity": 2}]}'::jsonb)$$,
	$$SELECT loyalty.coupon_redeem('@ann', '@order-3', 'TEN-OFF', '{"items": [{"sku": "A", "price": 30, "quantity": 2}]}')$$);
SELECT pg_temp.both(21, 'rollback, no order reference',
	$$SELECT loyalty.rollback_redemption(NULL)$$,
	$$SELECT loyalty.coupon_rollback('@ann', NULL)$$);

-- points
SELECT pg_temp.both(30, 'earn',
	$$SELECT * FROM loyalty.earn_points('@ann', 100, '@earn-1')$$,
	$$SELECT * FROM loyalty.points_earn('@ann', '@earn-1', 100)$$);
SELECT pg_temp.both(31, 'earn, repeat',
	$$SELECT * FROM loyalty.earn_points('@ann', 100, '@earn-1')$$,
	$$SELECT * FROM loyalty.points_earn('@ann', '@earn-1', 100)$$);
SELECT pg_temp.both(32, 'earn, reference reused',
	$$SELECT * FROM loyalty.earn_points('@ann', 90, '@earn-1')$$,
	$$SELECT * FROM loyalty.points_earn('@ann', '@earn-1', 90)$$);
SELECT pg_temp.both(33, 'earn, every option by name',
	$$SELECT * FROM loyalty.earn_points('@ann', 40, '@earn-2', reason => 'welcome', pending_until => now() + interval '30 days',
										expires_at => now() + interval '1 year', qualifying => false, at => now())$$,
	$$SELECT * FROM loyalty.points_earn('@ann', '@earn-2', 40, at => now(), reason => 'welcome',
										pending_until => now() + interval '30 days', expires_at => now() + interval '1 year', qualifying => false)$$);
SELECT pg_temp.both(34, 'earn, in the future',
	$$SELECT * FROM loyalty.earn_points('@ann', 10, '@earn-3', at => '2999-01-01')$$,
	$$SELECT * FROM loyalty.points_earn('@ann', '@earn-3', 10, at => '2999-01-01')$$);
SELECT pg_temp.both(35, 'earn, no points',
	$$SELECT * FROM loyalty.earn_points('@ann', NULL, '@earn-3')$$,
	$$SELECT * FROM loyalty.points_earn('@ann', '@earn-3', NULL)$$);
SELECT pg_temp.both(36, 'earn, negative points',
	$$SELECT * FROM loyalty.earn_points('@ann', -5, '@earn-3')$$,
	$$SELECT * FROM loyalty.points_earn('@ann', '@earn-3', -5)$$);
SELECT pg_temp.both(37, 'spend',
	$$SELECT * FROM loyalty.spend_points('@ann', 30, '@spend-1')$$,
	$$SELECT * FROM loyalty.points_spend('@ann', '@spend-1', 30)$$);
SELECT pg_temp.both(38, 'spend, short',
	$$SELECT * FROM loyalty.spend_points('@ann', 1000, '@spend-2', now())$$,
	$$SELECT * FROM loyalty.points_spend('@ann', '@spend-2', 1000, now())$$);
SELECT pg_temp.both(39, 'spend, no account',
	$$SELECT * FROM loyalty.spend_points('@nobody', 1, '@spend-3')$$,
	$$SELECT * FROM loyalty.points_spend('@nobody', '@spend-3', 1)$$);
SELECT pg_temp.both(40, 'earn for an order',
	$$SELECT * FROM loyalty.earn_for_order('@ann', '@order-1', 120.50)$$,
	$$SELECT * FROM loyalty.points_earn_for_order('@ann', '@order-1', 120.50)$$);
SELECT pg_temp.both(41, 'earn for an order, currency by name',
	$$SELECT * FROM loyalty.earn_for_order('@ann', '@order-4', 10, currency => 'USD')$$,
	$$SELECT * FROM loyalty.points_earn_for_order('@ann', '@order-4', 10, currency => 'USD')$$);
SELECT pg_temp.both(42, 'earn for an action',
	$$SELECT * FROM loyalty.earn_for_action('@ann', 'review', '@review-1')$$,
	$$SELECT * FROM loyalty.points_earn_for_action('@ann', '@review-1', 'review')$$);
SELECT pg_temp.both(43, 'earn for an unknown action',
	$$SELECT * FROM loyalty.earn_for_action('@ann', 'dance', '@dance-1')$$,
	$$SELECT * FROM loyalty.points_earn_for_action('@ann', '@dance-1', 'dance')$$);
SELECT pg_temp.both(44, 'reverse an earn',
	$$SELECT * FROM loyalty.reverse_points('@order-1', '@ann')$$,
	$$SELECT * FROM loyalty.points_reverse('@ann', '@order-1')$$);
SELECT pg_temp.both(45, 'reverse a spend, at by name',
	$$SELECT * FROM loyalty.reverse_points('@spend-1', '@ann', at => now())$$,
	$$SELECT * FROM loyalty.points_reverse('@ann', '@spend-1', at => now())$$);
SELECT pg_temp.both(46, 'reverse another customer''s reference',
	$$SELECT * FROM loyalty.reverse_points('@earn-1', '@bob')$$,
	$$SELECT * FROM loyalty.points_reverse('@bob', '@earn-1')$$);
SELECT pg_temp.both(47, 'adjust',
	$$SELECT * FROM loyalty.adjust_points('@ann', -15, '@fix-1', 'goodwill taken back')$$,
	$$SELECT * FROM loyalty.points_adjust('@ann', '@fix-1', -15, 'goodwill taken back')$$);
SELECT pg_temp.both(48, 'adjust, no reason',
	$$SELECT * FROM loyalty.adjust_points('@ann', 15, '@fix-2', NULL)$$,
	$$SELECT * FROM loyalty.points_adjust('@ann', '@fix-2', 15, NULL)$$);
SELECT pg_temp.both(49, 'adjust, expiry by name',
	$$SELECT * FROM loyalty.adjust_points('@ann', 15, '@fix-3', 'gift', expires_at => now() + interval '1 month')$$,
	$$SELECT * FROM loyalty.points_adjust('@ann', '@fix-3', 15, 'gift', expires_at => now() + interval '1 month')$$);
SELECT pg_temp.both(50, 'exchange',
	format($$SELECT code LIKE 'PTS-%%' AS issued, points, available FROM loyalty.exchange_points('@ann', %s, '@swap-1')$$, :voucher),
	format($$SELECT code LIKE 'PTS-%%' AS issued, points, available FROM loyalty.points_exchange('@ann', '@swap-1', %s)$$, :voucher));
SELECT pg_temp.both(51, 'exchange, not offered',
	format($$SELECT * FROM loyalty.exchange_points('@ann', %s, '@swap-2')$$, :ten),
	format($$SELECT * FROM loyalty.points_exchange('@ann', '@swap-2', %s)$$, :ten));
SELECT pg_temp.both(52, 'exchange, no customer',
	format($$SELECT * FROM loyalty.exchange_points(NULL, %s, '@swap-3')$$, :voucher),
	format($$SELECT * FROM loyalty.points_exchange(NULL, '@swap-3', %s)$$, :voucher));
SELECT pg_temp.both(53, 'coupon bonus',
	$$SELECT * FROM loyalty.earn_coupon_bonus('@ann', '@order-1')$$,
	$$SELECT * FROM loyalty.points_earn_coupon_bonus('@ann', '@order-1')$$);
SELECT pg_temp.both(54, 'coupon bonus, repeat',
	$$SELECT points, available FROM loyalty.earn_coupon_bonus('@ann', '@order-1', at => now())$$,
	$$SELECT points, available FROM loyalty.points_earn_coupon_bonus('@ann', '@order-1', at => now())$$);
SELECT pg_temp.both(55, 'coupon bonus, order without a bonus',
	$$SELECT loyalty.earn_coupon_bonus('@ann', '@order-9') IS NULL AS none$$,
	$$SELECT loyalty.points_earn_coupon_bonus('@ann', '@order-9') IS NULL AS none$$);
SELECT pg_temp.both(56, 'balance afterwards',
	$$SELECT available, pending, debt FROM loyalty.points_balance('@ann')$$,
	$$SELECT available, pending, debt FROM loyalty.points_balance('@ann')$$);

SELECT step, what, new AS result, old = new AS same FROM trace ORDER BY step;
SELECT count(*) AS steps, count(*) FILTER (WHERE old IS DISTINCT FROM new) AS different FROM trace;

-- the untyped statements of part 2 give the same results (NEW_ customers
-- again; each repeats a request made above, so the answer is the first one)
EXECUTE v('NEW_ann', 'TEN-OFF', '{"amount": 120.00}');
EXECUTE v_ref('NEW_ann', 'TEN-OFF', '{"amount": 50}', 'NEW_order-1');
EXECUTE rdm('NEW_ann', 'NEW_order-1', 'TEN-OFF', '{"amount": 50}');
EXECUTE rsv('NEW_ann', 'NEW_order-5', 'TEN-OFF', '{"amount": 40}');
EXECUTE rsv_ttl('NEW_ann', 'NEW_order-5', 'TEN-OFF', '{"amount": 40}', '1 hour');
EXECUTE rbk('NEW_ann', 'NEW_order-5');
SELECT points, available FROM loyalty.points_earn('NEW_ann', 'NEW_earn-1', 100);
EXECUTE earn('NEW_cy', 'NEW_earn-9', '7');
EXECUTE earn_opts('NEW_cy', 'NEW_earn-10', '80', now() - interval '1 minute', 'why', NULL, NULL, 'false');
EXECUTE spend('NEW_cy', 'NEW_spend-9', '5', now());
EXECUTE by_order('NEW_cy', 'NEW_order-9', '12.5', now(), NULL);
EXECUTE by_action('NEW_cy', 'NEW_review-9', 'review');
EXECUTE rev('NEW_cy', 'NEW_review-9', now());
EXECUTE adj('NEW_cy', 'NEW_fix-9', '-1', 'typo', now(), NULL);
EXECUTE xchg('NEW_cy', 'NEW_swap-9', :voucher, now());
EXECUTE bonus('NEW_cy', 'NEW_order-9', now());

-- one order under both names: the old numeric amount and {"amount": ...}
-- are the same order context, a repeat under the other name is a repeat
SELECT discount FROM loyalty.reserve_coupon('TEN-OFF', 'MIX_ann', 'MIX_order-1', 120.00);
SELECT loyalty.coupon_redeem('MIX_ann', 'MIX_order-1', 'TEN-OFF', '{"amount": 120}') AS new_redeems_old_hold;
SELECT loyalty.redeem_coupon('TEN-OFF', 'MIX_ann', 'MIX_order-1', 120.0) AS old_repeat;
SELECT count(*) AS redemptions FROM loyalty.redemption WHERE order_ref = 'MIX_order-1';
SELECT entry_id AS first_entry FROM loyalty.earn_points('MIX_ann', 30, 'MIX_earn-1') \gset
SELECT entry_id = :first_entry AS same_receipt FROM loyalty.points_earn('MIX_ann', 'MIX_earn-1', 30);
SELECT pg_temp.run($$SELECT * FROM loyalty.points_earn('MIX_ann', 'MIX_earn-1', 31)$$) AS other_content;
SELECT points, available FROM loyalty.points_reverse('MIX_ann', 'MIX_earn-1');
SELECT points, available FROM loyalty.reverse_points('MIX_earn-1', 'MIX_ann');

--
-- what the new order changes on purpose
--
-- a stray positional time: earn_points stores it as the reason, points_earn
-- takes it as at (and refuses a future one)
SELECT points FROM loyalty.earn_points('OLD_dan', 10, 'OLD_earn-20', '2999-01-01');
SELECT reason, effective_at < '2999-01-01' AS at_now FROM loyalty.points_ledger WHERE reference = 'OLD_earn-20';
SELECT pg_temp.run($$SELECT * FROM loyalty.points_earn('NEW_dan', 'NEW_earn-20', 10, '2999-01-01')$$) AS stray_time;
SELECT pg_temp.run($$SELECT * FROM loyalty.points_earn('NEW_dan', 'NEW_earn-21', 10, now() - interval '1 day')$$) AS past_time;
SELECT effective_at < now() - interval '23 hours' AS at_taken, reason IS NULL AS no_reason
FROM loyalty.points_ledger WHERE reference = 'NEW_earn-21';
-- points_reverse needs the customer (reverse_points looks the owner up)
SELECT pg_temp.run($$SELECT * FROM loyalty.reverse_points('OLD_review-1')$$) AS old_without_customer;
SELECT pg_temp.run($$SELECT * FROM loyalty.points_reverse(NULL, 'NEW_review-1')$$) AS new_without_customer;
-- coupon_rollback needs the customer, and refuses another customer's order
SELECT pg_temp.run($$SELECT loyalty.coupon_rollback('NEW_bob', 'NEW_order-1')$$) AS other_customers_order;
SELECT pg_temp.run($$SELECT loyalty.coupon_rollback(NULL, 'NEW_order-1')$$) AS no_customer;
SELECT state FROM loyalty.coupon_order WHERE order_ref = 'NEW_order-1';
-- 'purchase' is refused naming the new functions
SELECT pg_temp.run($$SELECT * FROM loyalty.earn_for_action('OLD_ann', 'purchase', 'OLD_buy-1')$$) AS old_purchase;
SELECT pg_temp.run($$SELECT * FROM loyalty.points_earn_for_action('NEW_ann', 'NEW_buy-1', 'purchase')$$) AS new_purchase;
-- several arguments missing: the first of the new signature is named
SELECT pg_temp.run($$SELECT * FROM loyalty.coupon_redeem(NULL, NULL, NULL, NULL)$$) AS all_missing;
SELECT pg_temp.run($$SELECT * FROM loyalty.points_spend('NEW_ann', NULL, NULL)$$) AS reference_missing;

-- a role with the app level calls the new names (SECURITY DEFINER: no table right)
CREATE ROLE api_app;
SELECT loyalty.grant_access('api_app', 'app');
SET ROLE api_app;
SELECT points, available FROM loyalty.points_earn('NEW_eve', 'NEW_earn-30', 5);
SELECT valid, reason FROM loyalty.coupon_validate('NEW_eve', 'TEN-OFF', '{"amount": 10}');
SELECT pg_temp.run($$SELECT * FROM loyalty.points_adjust('NEW_eve', 'NEW_fix-30', 5, 'no')$$) AS adjust_is_admin;
RESET ROLE;
SELECT loyalty.revoke_access('api_app', 'app');
DROP ROLE api_app;

DROP EXTENSION loyalty;
CREATE EXTENSION loyalty;
