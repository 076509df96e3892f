-- pgTAP: the CLV family through the access levels: an admin fits a model
-- from a table it can read, an analyst reads the view and the audience, the
-- application scores but cannot write models, and a degenerate fit is
-- refused.
BEGIN;
SELECT plan(9);

CREATE ROLE tap_clv_app;
CREATE ROLE tap_clv_analyst;
CREATE ROLE tap_clv_admin;
SELECT loyalty.grant_access('tap_clv_app', 'app');
SELECT loyalty.grant_access('tap_clv_analyst', 'analyst');
SELECT loyalty.grant_access('tap_clv_admin', 'admin');

CREATE TABLE public.tap_clv_orders (customer int, ordered_at timestamptz, amount numeric);
INSERT INTO public.tap_clv_orders
SELECT c, '2026-01-01 12:00+00'::timestamptz + (c % 31) * interval '1 day' + k * (3 + c % 17) * interval '1 day',
	   10 + (c * 13 + k * 7) % 90 + (c % 7) * 25
FROM generate_series(1, 300) c, generate_series(0, 12) k
WHERE k <= c % 13 AND k * (3 + c % 17) < 120 + c % 150;
GRANT SELECT ON public.tap_clv_orders TO tap_clv_admin;

SET LOCAL ROLE tap_clv_admin;
SELECT lives_ok($$SELECT loyalty.clv_fit('tap', 'public.tap_clv_orders', 'customer', 'ordered_at', 'amount',
										 '2026-07-01', penalizer => 0.001)$$,
				'admin fits a model from a table it may read');
SELECT is((SELECT bgnbd_status FROM loyalty.clv_model WHERE model_name = 'tap'), 'converged',
		  'the stored model converged');
RESET ROLE;

SET LOCAL ROLE tap_clv_app;
SELECT cmp_ok(loyalty.clv_p_alive('tap', 3, 20, 60), '<', 1::float8, 'app scores a customer');
SELECT throws_ok($$INSERT INTO loyalty.clv_model (model_name) VALUES ('x')$$, '42501', NULL,
				 'app cannot write a model');
SELECT throws_ok($$SELECT * FROM loyalty.clv_customers$$, '42501', NULL,
				 'app cannot read the analyst view');
RESET ROLE;

SET LOCAL ROLE tap_clv_analyst;
SELECT lives_ok($$SELECT * FROM loyalty.clv_customers$$, 'analyst reads clv_customers');
SELECT lives_ok($$SELECT * FROM loyalty.clv_slipping_away('tap')$$, 'analyst reads the audience');
SELECT throws_ok($$SELECT loyalty.clv_fit('tap2', 'public.tap_clv_orders', 'customer', 'ordered_at', 'amount')$$,
				 '42501', NULL, 'analyst cannot fit');
RESET ROLE;

-- ten CDNOW customers and a strong penalizer: a parameter runs off to 0,
-- the fit is refused with its reason, never stored with a NaN
SELECT throws_ok($$SELECT * FROM loyalty.clv_fit_stats(
			  (SELECT loyalty.clv_stats(x, tx, t, m) FROM (VALUES
				  (2::bigint, 30.43::float8, 38.86::float8, 22.35::float8), (1, 1.71, 38.86, 11.77),
				  (0, 0, 38.86, NULL), (0, 0, 38.86, NULL), (0, 0, 38.86, NULL), (7, 29.43, 38.86, 73.74),
				  (1, 5.0, 38.86, 11.77), (0, 0, 38.71, NULL), (2, 35.71, 38.71, 25.55), (0, 0, 38.71, NULL))
				  AS v(x, tx, t, m)), penalizer => 0.5)$$,
		  'LV006', NULL, 'a fit that runs to a boundary is refused (LV006)');

SELECT * FROM finish();
ROLLBACK;
