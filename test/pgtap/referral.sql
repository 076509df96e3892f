-- pgTAP: the referral and mission API contract: signatures, SQLSTATEs of
-- every refusal, idempotency, rewards in the ledger, clawback, access.
BEGIN;
SELECT plan(26);

SELECT has_function('loyalty', 'referral_code', ARRAY['text', 'text', 'text', 'text', 'text', 'text', 'text']);
SELECT has_function('loyalty', 'referral_join',
	ARRAY['text', 'text', 'text', 'timestamp with time zone', 'text', 'text', 'text', 'text']);
SELECT has_function('loyalty', 'referral_order', ARRAY['text', 'text', 'numeric', 'timestamp with time zone']);
SELECT has_function('loyalty', 'referral_refund', ARRAY['text', 'text', 'timestamp with time zone']);
SELECT has_function('loyalty', 'mission_order', ARRAY['text', 'text', 'numeric', 'timestamp with time zone', 'text[]']);
SELECT has_view('loyalty', 'referral_leaderboard', 'leaderboard view');
SELECT has_view('loyalty', 'referral_kpi', 'referral KPI view');
SELECT has_view('loyalty', 'mission_stats', 'mission analyst view');

INSERT INTO loyalty.referral_program (program, referrer_points, referee_points, min_order_amount, cap_lifetime)
VALUES ('tap', 100, 40, 10, 2);
SELECT is(loyalty.referral_code('ref', 'tap', vanity => 'TAPFRIENDS', email => 'Ref@Example.com'), 'TAPFRIENDS', 'vanity code');
SELECT is(loyalty.referral_code('ref', 'tap'), 'TAPFRIENDS', 'same code again');

SELECT throws_ok($$SELECT loyalty.referral_join('x1', 'j', 'NOPE')$$, 'LR001', NULL, 'unknown code');
SELECT throws_ok($$SELECT loyalty.referral_code('x1', 'none')$$, 'LR002', NULL, 'unknown program');
SELECT throws_ok($$SELECT loyalty.referral_join('ref', 'j', 'TAPFRIENDS')$$, 'LR003', NULL, 'self-referral by key');
SELECT throws_ok($$SELECT loyalty.referral_join('x1', 'j', 'TAPFRIENDS', email => 'ref+1@example.com')$$,
				 'LR003', NULL, 'self-referral by email');
SELECT lives_ok($$SELECT loyalty.referral_join('x1', 'j1', 'tap-friends', email => 'x1@example.com')$$, 'join');
SELECT lives_ok($$SELECT loyalty.referral_join('x1', 'j1', 'TAPFRIENDS')$$, 'join repeated');
SELECT throws_ok($$SELECT loyalty.referral_join('x1', 'j2', 'TAPFRIENDS')$$, 'LR004', NULL, 'one referrer per referee');
SELECT throws_ok($$SELECT loyalty.referral_join('x2', 'j', 'TAPFRIENDS', email => 'X1@example.com')$$,
				 'LR008', NULL, 'identifier reused');
SELECT throws_ok($$SELECT loyalty.mission_join('x1', 'none')$$, 'LM001', NULL, 'unknown mission');

SELECT is((SELECT status FROM loyalty.referral_order('x1', 'o0', 5)), 'below_minimum', 'minimum order amount');
SELECT is((SELECT status FROM loyalty.referral_order('x1', 'o1', 50)), 'converted', 'first qualifying purchase');
SELECT is((SELECT status FROM loyalty.referral_order('x1', 'o1', 50)), 'converted', 'repeat returns the result');
SELECT results_eq($$SELECT c, b.available, b.pending FROM unnest(ARRAY['ref', 'x1']) c,
						  LATERAL loyalty.points_balance(c) b ORDER BY c$$,
	$$VALUES ('ref', 0::bigint, 100::bigint), ('x1', 0::bigint, 40::bigint)$$,
	'both rewards pending');
SELECT is((SELECT status FROM loyalty.referral_refund('x1', 'o1')), 'revoked', 'refund revokes');
SELECT is((SELECT pending FROM loyalty.points_balance('ref')), 0::bigint, 'referrer reward taken back');
SELECT is_empty($$SELECT * FROM loyalty.check_integrity()$$, 'ledger consistent');

SELECT * FROM finish();
ROLLBACK;
