--
-- campaign_experiment: deterministic assignment by a stable hash of
-- (customer, experiment), weights, a true hold-out that receives nothing,
-- stability when the audience changes, independence between experiments,
-- variants changing the offer.
--
-- (in a database of its own: the points ledger and the segment snapshots it
-- writes must not shift the ids the other tests print)
\set regress_db :DBNAME
CREATE DATABASE campaign_experiment_db;
\c campaign_experiment_db
CREATE EXTENSION loyalty;
SET timezone = 'UTC';
\set SHOW_CONTEXT never

-- the hash is md5-based: the same values in every PostgreSQL version
SELECT loyalty.experiment_bucket('salt', 'customer-1') AS b1,
	   loyalty.experiment_bucket('salt', 'customer-2') AS b2,
	   loyalty.experiment_bucket('other salt', 'customer-1') AS b3;

SELECT loyalty.create_campaign('ex coupons', 'percent', percent_off => 10) AS cc \gset
SELECT loyalty.create_experiment('ex winback', '[
	{"variant": "ten", "weight": 45},
	{"variant": "points", "weight": 45, "offer_kind": "points", "bonus_points": 100},
	{"variant": "control", "weight": 10, "holdout": true}]', salt => 'ex winback salt') AS ex \gset
SELECT variant, weight, holdout, offer_kind, bonus_points, position
FROM loyalty.experiment_variant WHERE experiment_id = :ex ORDER BY position;

-- 2000 consenting customers
SELECT count(loyalty.set_consent('e' || i, 'email', true, 'test')) FROM generate_series(1, 2000) i;
SELECT loyalty.create_marketing_campaign('ex all', 'customers',
	(SELECT jsonb_build_object('customers', jsonb_agg('e' || i)) FROM generate_series(1, 2000) i),
	'code', coupon_campaign_id => :cc, code_pattern => 'EX-####-####', experiment_id => :ex) AS mc1 \gset
SELECT * FROM loyalty.publish_marketing_campaign(:mc1, '2026-11-01');

-- shares near the weights (45 / 45 / 10 of 2000)
SELECT variant, holdout, count(*) BETWEEN CASE WHEN holdout THEN 140 ELSE 800 END
								  AND CASE WHEN holdout THEN 260 ELSE 1000 END AS share_near_weight
FROM loyalty.experiment_assignment WHERE experiment_id = :ex GROUP BY 1, 2 ORDER BY 1;
-- every assignment is the hash's draw
SELECT count(*) AS not_the_hash
FROM loyalty.experiment_assignment a
WHERE a.experiment_id = :ex
  AND a.variant <> CASE WHEN loyalty.experiment_bucket('ex winback salt', a.customer_id) < 0.45 THEN 'ten'
						WHEN loyalty.experiment_bucket('ex winback salt', a.customer_id) < 0.90 THEN 'points'
						ELSE 'control' END;
-- the hold-out receives nothing and is logged as such
SELECT count(*) AS holdout_offered
FROM loyalty.experiment_assignment a JOIN loyalty.campaign_publication p USING (customer_id)
WHERE a.experiment_id = :ex AND a.holdout;
SELECT count(*) AS holdout_points
FROM loyalty.experiment_assignment a JOIN loyalty.points_ledger l USING (customer_id)
WHERE a.experiment_id = :ex AND a.holdout;
SELECT (SELECT count(*) FROM loyalty.campaign_filtered f WHERE f.marketing_campaign_id = :mc1
		AND f.reason = 'holdout' AND f.variant = 'control')
	 = (SELECT count(*) FROM loyalty.experiment_assignment a WHERE a.experiment_id = :ex AND a.holdout)
	AS holdout_logged;
-- the variant changes the offer
SELECT variant, offer_kind, count(*) > 0 AS some, bool_and(code IS NOT NULL) AS coded,
	   bool_and(bonus_points IS NOT DISTINCT FROM CASE WHEN offer_kind = 'points' THEN 100 END) AS points_ok
FROM loyalty.campaign_publication WHERE marketing_campaign_id = :mc1 GROUP BY 1, 2 ORDER BY 1;
SELECT sum(points) = 100 * count(*) AS points_once FROM loyalty.points_ledger;

-- a second campaign of the same experiment over a smaller, shifted audience
-- (e1000 .. e2500): the customers already drawn keep their variant
SELECT loyalty.create_marketing_campaign('ex later', 'customers',
	(SELECT jsonb_build_object('customers', jsonb_agg('e' || i)) FROM generate_series(1000, 2500) i),
	'none', experiment_id => :ex) AS mc2 \gset
SELECT count(loyalty.set_consent('e' || i, 'email', true, 'test')) FROM generate_series(2001, 2500) i;
SELECT * FROM loyalty.publish_marketing_campaign(:mc2, '2026-11-02');
SELECT count(*) AS variant_changed
FROM loyalty.campaign_publication p1
JOIN loyalty.campaign_publication p2 ON p2.customer_id = p1.customer_id AND p2.marketing_campaign_id = :mc2
WHERE p1.marketing_campaign_id = :mc1 AND p1.variant <> p2.variant;
SELECT count(*) AS holdout_changed
FROM loyalty.campaign_filtered f1
JOIN loyalty.campaign_publication p2 ON p2.customer_id = f1.customer_id AND p2.marketing_campaign_id = :mc2
WHERE f1.marketing_campaign_id = :mc1 AND f1.reason = 'holdout';
-- the variant's offer ('points') replaces the campaign's 'none'
SELECT offer_kind, count(*) > 0 AS some FROM loyalty.campaign_publication WHERE marketing_campaign_id = :mc2
GROUP BY 1 ORDER BY 1;

-- a second experiment is independent of the first: the customers in both
-- hold-outs are about 10% x 10% of them
SELECT loyalty.create_experiment('ex other', '[{"variant": "a", "weight": 9},
	{"variant": "hold", "weight": 1, "holdout": true}]', salt => 'ex other salt') AS ex2 \gset
SELECT loyalty.create_marketing_campaign('ex other campaign', 'customers',
	(SELECT jsonb_build_object('customers', jsonb_agg('e' || i)) FROM generate_series(1, 2000) i),
	'none', experiment_id => :ex2) AS mc3 \gset
SELECT outcome, customers BETWEEN 140 AND 260 AS about_ten_percent
FROM loyalty.publish_marketing_campaign(:mc3, '2026-11-03') WHERE outcome = 'holdout';
SELECT count(*) BETWEEN 6 AND 40 AS both_holdouts_independent
FROM loyalty.experiment_assignment a1 JOIN loyalty.experiment_assignment a2 USING (customer_id)
WHERE a1.experiment_id = :ex AND a1.holdout AND a2.experiment_id = :ex2 AND a2.holdout;

-- changing the weights later does not move anyone already assigned
UPDATE loyalty.experiment_variant SET weight = 1 WHERE experiment_id = :ex AND variant = 'ten';
SELECT loyalty.create_marketing_campaign('ex reweighted', 'customers',
	(SELECT jsonb_build_object('customers', jsonb_agg('e' || i)) FROM generate_series(1, 2000) i),
	'none', experiment_id => :ex) AS mc4 \gset
SELECT outcome FROM loyalty.publish_marketing_campaign(:mc4, '2026-11-04') ORDER BY 1;
SELECT count(*) AS moved
FROM loyalty.campaign_publication p1
JOIN loyalty.campaign_publication p4 ON p4.customer_id = p1.customer_id AND p4.marketing_campaign_id = :mc4
WHERE p1.marketing_campaign_id = :mc1 AND p1.variant <> p4.variant;

-- errors
SELECT loyalty.create_experiment('ex bad', '[]');
SELECT loyalty.create_experiment('ex bad', '[{"variant": "a"}]');
SELECT loyalty.create_experiment('ex bad', '[{"variant": "a", "weight": 1, "holdout": true, "offer_kind": "none"}]');
SELECT loyalty.create_experiment('ex bad', '[{"variant": "a", "weight": 1, "holdout": true}, {"variant": "b", "weight": 1, "holdout": true}]');
SELECT loyalty.create_experiment('ex bad', '[{"variant": "a", "weight": 0}]');
SELECT count(*) FROM loyalty.experiment WHERE name = 'ex bad';

\c :regress_db
DROP DATABASE campaign_experiment_db;
