-- pgTAP: the points API contract: receipts, idempotency, SQLSTATEs, FIFO,
-- debt, tiers, expiry, access levels and the integrity check.
BEGIN;
SELECT plan(55);

INSERT INTO loyalty.settings (timezone) VALUES ('Europe/Paris');
INSERT INTO loyalty.points_program (expiry_months, expiry_rounding)
VALUES (12, 'month');
INSERT INTO loyalty.tier (name, rank, threshold, multiplier) VALUES
	('Member', 0, 0, 1), ('Silver', 1, 300, 1.5), ('Gold', 2, 600, 2);
INSERT INTO loyalty.earning_rule (name, event, points_per_unit) VALUES ('base', 'purchase', 1);
INSERT INTO loyalty.earning_rule (name, event, fixed_points, cap_points, cap_period)
VALUES ('birthday', 'birthday', 100, 100, 'year');

-- the API exists with the documented signatures
SELECT has_function('loyalty', 'earn_points',
	ARRAY['text', 'bigint', 'text', 'text', 'timestamp with time zone', 'timestamp with time zone', 'boolean', 'timestamp with time zone']);
SELECT has_function('loyalty', 'spend_points', ARRAY['text', 'bigint', 'text', 'timestamp with time zone']);
SELECT has_function('loyalty', 'reverse_points', ARRAY['text', 'text', 'timestamp with time zone']);
SELECT has_function('loyalty', 'points_balance', ARRAY['text', 'timestamp with time zone']);
SELECT has_function('loyalty', 'expire_points', ARRAY['timestamp with time zone', 'integer']);
SELECT is((SELECT count(*)::int FROM pg_proc WHERE oid IN (
			'loyalty.earn_points(text,bigint,text,text,timestamptz,timestamptz,boolean,timestamptz)'::regprocedure,
			'loyalty.spend_points(text,bigint,text,timestamptz)'::regprocedure,
			'loyalty.reverse_points(text,text,timestamptz)'::regprocedure,
			'loyalty.earn_for_order(text,text,numeric,text,timestamptz)'::regprocedure,
			'loyalty.earn_for_action(text,text,text,timestamptz)'::regprocedure,
			'loyalty.points_balance(text,timestamptz)'::regprocedure)
		   AND prosecdef AND 'search_path=pg_catalog, pg_temp' = ANY (proconfig)),
		  6, 'API functions run SECURITY DEFINER with a safe search_path');

-- earning: receipt, account created on first credit, repeat returns the first result
SELECT results_eq(
	$$SELECT points, available, pending, debt FROM loyalty.earn_points('t1', 100, 'tap-1', at => '2026-01-01')$$,
	$$VALUES (100::bigint, 100::bigint, 0::bigint, 0::bigint)$$,
	'earn_points returns the receipt');
SELECT is((SELECT tier FROM loyalty.points_account WHERE customer_id = 't1'), 'Member',
		  'a new account starts in the tier that needs nothing');
SELECT is((SELECT entry_id FROM loyalty.earn_points('t1', 100, 'tap-1', at => '2026-01-09')),
		  (SELECT entry_id FROM loyalty.points_ledger WHERE reference = 'tap-1'),
		  'a repeat returns the first entry');
SELECT is((SELECT count(*)::int FROM loyalty.points_ledger WHERE reference = 'tap-1'), 1,
		  'a repeat writes nothing');
SELECT throws_ok($$SELECT loyalty.earn_points('t1', 99, 'tap-1', at => '2026-01-01')$$, 'LP002',
				 NULL, 'same reference, other points: LP002');
SELECT throws_ok($$SELECT loyalty.earn_points('t2', 100, 'tap-1', at => '2026-01-01')$$, 'LP002',
				 'reference "tap-1" belongs to another customer', 'same reference, other customer: LP002');

-- bad input
SELECT throws_ok($$SELECT loyalty.earn_points('t1', 0, 'tap-x')$$, '22023', NULL, 'zero points: 22023');
SELECT throws_ok($$SELECT loyalty.spend_points('t1', -1, 'tap-x')$$, '22023', NULL, 'negative points: 22023');
SELECT throws_ok($$SELECT loyalty.earn_points('t1', NULL, 'tap-x')$$, '22004', NULL, 'null points: 22004');
SELECT throws_ok($$SELECT loyalty.reverse_points(NULL)$$, '22004', NULL, 'null reference: 22004');
SELECT throws_ok($$SELECT loyalty.earn_points('t1', 9223372036854775807, 'tap-x', at => '2026-01-01')$$,
				 '22003', NULL, 'balance overflow: 22003');
SELECT is((SELECT count(*)::int FROM loyalty.points_ledger WHERE reference = 'tap-x'), 0,
		  'failed calls leave no entry');

-- spending: FIFO by expiry, LP001 when short
SELECT lives_ok($$SELECT loyalty.earn_points('t1', 50, 'tap-2', expires_at => '2026-03-01', at => '2026-01-02')$$,
				'earn an expiring lot');
SELECT results_eq($$SELECT points, available FROM loyalty.spend_points('t1', 60, 'tap-3', at => '2026-01-03')$$,
				  $$VALUES (-60::bigint, 90::bigint)$$, 'spend 60 of 150');
SELECT results_eq($$SELECT lot_points FROM loyalty.points_ledger WHERE reference = 'tap-3' AND kind = 'spend'$$,
				  $$VALUES ('{-50,-10}'::bigint[])$$, 'the spend took the soonest-expiring lot first');
SELECT throws_ok($$SELECT loyalty.spend_points('t1', 91, 'tap-4', at => '2026-01-04')$$, 'LP001',
				 'insufficient points: 91 requested, 90 available', 'a short balance: LP001');
SELECT throws_ok($$SELECT loyalty.spend_points('nobody', 1, 'tap-5', at => '2026-01-04')$$, 'LP001',
				 NULL, 'no account: LP001');
SELECT ok(NOT EXISTS (SELECT 1 FROM loyalty.points_account WHERE customer_id = 'nobody'),
		  'a failed spend creates no account');

-- pending and expiry at read time, without any job
SELECT lives_ok($$SELECT loyalty.earn_points('t3', 40, 'tap-6', pending_until => '2026-02-01', at => '2026-01-01')$$,
				'earn pending points');
SELECT results_eq($$SELECT available, pending FROM loyalty.points_balance('t3', '2026-01-31')$$,
				  $$VALUES (0::bigint, 40::bigint)$$, 'pending before their time');
SELECT results_eq($$SELECT available, pending FROM loyalty.points_balance('t3', '2026-02-01')$$,
				  $$VALUES (40::bigint, 0::bigint)$$, 'available from their time, no job needed');
SELECT lives_ok($$SELECT loyalty.earn_points('t3', 10, 'tap-7', expires_at => '2026-03-01', at => '2026-01-01')$$,
				'earn expiring points');
SELECT results_eq($$SELECT available, next_expiry_date, next_expiry_points FROM loyalty.points_balance('t3', '2026-02-15')$$,
				  $$VALUES (50::bigint, '2026-03-01'::date, 10::bigint)$$,
				  'next expiry: the last usable day in the program time zone, and its points');
SELECT results_eq($$SELECT available FROM loyalty.points_balance('t3', '2026-03-01')$$,
				  $$VALUES (40::bigint)$$, 'expired points do not count, no job needed');
SELECT results_eq($$SELECT accounts, expired_points, activated_points FROM loyalty.expire_points('2026-03-01')$$,
				  $$VALUES (2::bigint, 10::bigint, 40::bigint)$$, 'the job settles what was due');

-- refunds: take back, return, debt, never negative
SELECT lives_ok($$SELECT loyalty.earn_points('t4', 100, 'tap-8', at => '2026-01-01')$$, 'earn 100');
SELECT lives_ok($$SELECT loyalty.spend_points('t4', 100, 'tap-9', at => '2026-01-02')$$, 'spend them');
SELECT results_eq($$SELECT points, available, debt FROM loyalty.reverse_points('tap-8', at => '2026-01-03')$$,
				  $$VALUES (-100::bigint, 0::bigint, 100::bigint)$$,
				  'reversing spent points records debt, the balance stays at 0');
SELECT results_eq($$SELECT available, debt FROM loyalty.earn_points('t4', 30, 'tap-10', at => '2026-01-04')$$,
				  $$VALUES (0::bigint, 70::bigint)$$, 'the next credit repays the debt first');
SELECT results_eq($$SELECT points, available, debt FROM loyalty.reverse_points('tap-9', at => '2026-01-05')$$,
				  $$VALUES (100::bigint, 30::bigint, 0::bigint)$$, 'returned points repay the rest');
SELECT throws_ok($$SELECT loyalty.spend_points('t4', 1, 'tap-8', at => '2026-01-06')$$, 'LP005',
				 NULL, 'a reversed reference takes no new spend: LP005');
SELECT throws_ok($$SELECT loyalty.reverse_points('tap-none', at => '2026-01-06')$$, 'LP003',
				 NULL, 'unknown reference: LP003');
-- a reference two customers used (impossible through the API since 0.3.0:
-- loyalty.points_reference holds one owner; simulated by a direct insert):
-- reversing it without a customer reverses the owner's entries
INSERT INTO loyalty.points_ledger (customer_id, kind, points, reference, available_after, pending_after, debt_after, effective_at)
SELECT 't3', 'spend', 0, 'tap-8', 0, 0, 0, '2026-01-06';
SELECT results_eq($$SELECT customer_id FROM loyalty.reverse_points('tap-8', at => '2026-01-07')$$,
				  $$VALUES ('t4'::text)$$, 'a reference of two customers: the owner''s entries are reversed');
SELECT lives_ok($$SELECT loyalty.reverse_points('tap-8', 't4', at => '2026-01-07')$$,
				'with the customer given it is a repeat');

-- rules and tiers
SELECT results_eq($$SELECT points FROM loyalty.earn_for_order('t5', 'tap-11', 299.99, at => '2026-01-01')$$,
				  $$VALUES (299::bigint)$$, 'rule points are rounded down');
SELECT is((SELECT tier FROM loyalty.points_account WHERE customer_id = 't5'), 'Member', 'below Silver');
SELECT results_eq($$SELECT points FROM loyalty.earn_for_order('t5', 'tap-12', 1, at => '2026-01-02')$$,
				  $$VALUES (1::bigint)$$, 'one more point');
SELECT is((SELECT tier FROM loyalty.points_account WHERE customer_id = 't5'), 'Silver',
		  'upgraded at once inside the earning call');
SELECT results_eq($$SELECT points FROM loyalty.earn_for_order('t5', 'tap-13', 10, at => '2026-01-03')$$,
				  $$VALUES (15::bigint)$$, 'the new tier''s multiplier applies to the next earning');
SELECT is((SELECT message FROM loyalty.tier_progress('t5', '2026-01-03')), '285 points to Gold',
		  'tier_progress says what is missing');
SELECT results_eq($$SELECT points FROM loyalty.earn_for_action('t5', 'birthday', 'tap-14', at => '2026-05-01')
				   UNION ALL
				   SELECT points FROM loyalty.earn_for_action('t5', 'birthday', 'tap-15', at => '2026-12-01')$$,
				  $$VALUES (100::bigint), (0::bigint)$$, 'a yearly cap');
SELECT throws_ok($$SELECT loyalty.earn_for_action('t5', 'selfie', 'tap-16', at => '2026-05-01')$$, 'LP004',
				 NULL, 'an action no rule names: LP004');

-- the ledger is append-only; the app role calls but writes nothing directly
SELECT throws_ok($$UPDATE loyalty.points_ledger SET points = 0$$, '42501', NULL, 'no UPDATE of the ledger');
SELECT throws_ok($$DELETE FROM loyalty.points_ledger$$, '42501', NULL, 'no DELETE of the ledger');
CREATE ROLE tap_points_app;
SELECT loyalty.grant_access('tap_points_app', 'app');
SET LOCAL ROLE tap_points_app;
SELECT lives_ok($$SELECT loyalty.spend_points('t5', 1, 'tap-17', at => '2026-12-02')$$, 'the app role spends');
SELECT throws_ok($$UPDATE loyalty.points_account SET available = 10^6$$, '42501', NULL, 'the app role cannot write an account');
SELECT throws_ok($$SELECT loyalty.adjust_points('t5', 1000, 'tap-18', 'x')$$, '42501', NULL, 'the app role cannot adjust');
RESET ROLE;

-- the simulated race above is reported; nothing else is
SELECT results_eq($$SELECT problem, customer_id FROM loyalty.check_integrity()$$,
				  $$VALUES ('reference not owned by the customer', 't3'), ('reference of several customers', 't3')$$,
				  'check_integrity() reports the shared reference and the entry its owner did not make');
SELECT is_empty($$SELECT * FROM loyalty.check_integrity()
				  WHERE problem NOT IN ('reference of several customers', 'reference not owned by the customer')$$,
				'check_integrity() finds nothing else');

SELECT * FROM finish();
ROLLBACK;
