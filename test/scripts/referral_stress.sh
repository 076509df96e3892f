#!/usr/bin/env bash
# Scripted check: a referral storm keeps every rule.
#
# pgbench with 32 clients (REFERRAL_STRESS_CLIENTS) for
# REFERRAL_STRESS_SECONDS (default 15): referrers asking for their code at
# once, friends joining with random codes (overlapping friends, so many
# joins race for one referee), emails drawn from a small pool (reused
# identifiers, and the referrers' own emails: self-referral), customers who
# already ordered trying to join, purchases of random amounts (some under
# the minimum), repeated purchases and refunds of the qualifying orders.
# The refusals a shop expects (LR001-LR008) are caught per call and
# counted; any other error aborts the run.  Afterwards: each referee has one
# referrer, no two referees share an identifier, no referee used its
# referrer's identifier or had ordered before, no conversion is under the
# minimum, no referrer is over a cap, every converted or revoked referral
# has exactly one earning per side (none for the others), every revoked one
# exactly one reversal per side, the referrers' counters equal the
# referrals, and loyalty.check_integrity() is empty.
set -euo pipefail
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
db=loyalty_referral_stress
seconds=${REFERRAL_STRESS_SECONDS:-15}
clients=${REFERRAL_STRESS_CLIENTS:-32}
work=$(mktemp -d /tmp/loyalty-referral.XXXXXX)
trap 'rm -rf "$work"; dropdb --if-exists "$db" >/dev/null 2>&1 || true' EXIT

psql -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
psql -d "$db" <<'SQL'
CREATE EXTENSION loyalty;
-- 3 rewarded friends per referrer and day, 5 ever; orders from 20
INSERT INTO loyalty.referral_program (program, referrer_points, referee_points, min_order_amount,
									  cap_per_period, cap_period, cap_lifetime)
VALUES ('p', 100, 50, 20, 3, 'day', 5);
INSERT INTO loyalty.referral_reward_tier VALUES ('p', 3, 150);
CREATE SCHEMA stress;
-- what succeeded, with the identifier given (in the join's transaction)
CREATE TABLE stress.joined (referee text PRIMARY KEY, email text);
CREATE TABLE stress.refused (state text PRIMARY KEY, n bigint NOT NULL);
-- customers who ordered before the program: c1..c20
SELECT count(loyalty.points_earn_for_order('f' || i, 'old-' || i, 30, at => now() - interval '1 day'))
FROM generate_series(1, 400, 20) i;
CREATE FUNCTION stress.try(q text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE q;
EXCEPTION WHEN SQLSTATE 'LR001' OR SQLSTATE 'LR003' OR SQLSTATE 'LR004' OR SQLSTATE 'LR005'
		OR SQLSTATE 'LR006' OR SQLSTATE 'LR007' OR SQLSTATE 'LR008' THEN
	INSERT INTO stress.refused VALUES (SQLSTATE, 1)
	ON CONFLICT (state) DO UPDATE SET n = stress.refused.n + 1;
END $$;
CREATE FUNCTION stress.join(p_referee text, referrer integer, email text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	code text := (SELECT k.code::text FROM loyalty.referral_code k WHERE k.customer_id = 'r' || referrer);
BEGIN
	IF code IS NULL THEN
		RETURN;
	END IF;
	PERFORM loyalty.referral_join(p_referee, 'join-' || p_referee, code, email => email);
	INSERT INTO stress.joined VALUES (p_referee, loyalty.referral_normalize('email', email))
	ON CONFLICT ON CONSTRAINT joined_pkey DO NOTHING;
END $$;
SQL

cat >"$work/code.sql" <<'PGBENCH'
\set r random(1, 40)
SELECT loyalty.referral_code('r' || :r, 'p', email => 'U' || :r || '+ref@gmail.com');
PGBENCH
cat >"$work/join.sql" <<'PGBENCH'
\set f random(1, 400)
\set r random(1, 40)
\set e random(1, 260)
SELECT stress.try(format('SELECT stress.join(%L, %s, %L)', 'f' || :f, :r, 'u.' || :e || '@gmail.com'));
PGBENCH
cat >"$work/buy.sql" <<'PGBENCH'
\set f random(1, 400)
\set k random(1, 3)
\set a random(5, 60)
SELECT loyalty.referral_order('f' || :f, 'o-' || :f || '-' || :k, :a);
PGBENCH
# refunds for the first half of the friends only: the other half's
# conversions stand (a refund may hit every order of a friend it reaches:
# with all friends refundable a fast run revoked every conversion)
cat >"$work/refund.sql" <<'PGBENCH'
\set f random(1, 200)
\set k random(1, 3)
SELECT loyalty.referral_refund('f' || :f, 'o-' || :f || '-' || :k);
PGBENCH

pgbench -n -c "$clients" -j 4 -T "$seconds" \
	-f "$work/code.sql@2" -f "$work/join.sql@6" -f "$work/buy.sql@5" -f "$work/refund.sql@1" \
	"$db" >"$work/pgbench.log" 2>&1 || { grep -E "error|ERROR" "$work/pgbench.log" | head -20; exit 1; }
grep -E '^(number of transactions actually processed|number of failed|tps)' "$work/pgbench.log"
if grep -q 'aborted' "$work/pgbench.log"; then
	cat "$work/pgbench.log"
	echo "pgbench clients aborted" >&2
	exit 1
fi

psql -d "$db" -c "SELECT status, count(*) FROM loyalty.referral GROUP BY status ORDER BY status" \
	-c "SELECT state, n FROM stress.refused ORDER BY state"

check() {
	local n
	n=$(psql -At -d "$db" -c "SELECT count(*) FROM ($2) x")
	if [ "$n" != 0 ]; then
		echo "FAILED: $1 ($n rows)" >&2
		psql -d "$db" -c "$2 LIMIT 10" >&2
		exit 1
	fi
	echo "ok: $1"
}
check "every rule was exercised" "
	SELECT s FROM unnest(ARRAY['LR003', 'LR004', 'LR005', 'LR008']) s
	WHERE s NOT IN (SELECT state FROM stress.refused)
	UNION ALL SELECT 'converted' WHERE NOT EXISTS (SELECT 1 FROM loyalty.referral WHERE status = 'converted')
	UNION ALL SELECT 'revoked' WHERE NOT EXISTS (SELECT 1 FROM loyalty.referral WHERE status = 'revoked')
	UNION ALL SELECT 'refused' WHERE NOT EXISTS (SELECT 1 FROM loyalty.referral WHERE status = 'refused')"
check "every referral was a successful join, one per referee" "
	SELECT r.customer_id FROM loyalty.referral r FULL JOIN stress.joined j ON j.referee = r.customer_id
	WHERE r.customer_id IS NULL OR j.referee IS NULL"
check "no identifier shared by two referees" "
	SELECT email FROM stress.joined GROUP BY email HAVING count(*) > 1"
check "no self-referral (key or the referrer's email)" "
	SELECT r.customer_id FROM loyalty.referral r JOIN stress.joined j ON j.referee = r.customer_id
	WHERE r.referrer_id = r.customer_id
	   OR j.email = loyalty.referral_normalize('email', 'U' || substr(r.referrer_id, 2) || '@gmail.com')"
check "no referee had ordered before" "
	SELECT customer_id FROM loyalty.referral WHERE customer_id IN (SELECT 'f' || i FROM generate_series(1, 400, 20) i)"
check "no conversion under the minimum amount" "
	SELECT customer_id FROM loyalty.referral WHERE status IN ('converted', 'revoked') AND order_amount < 20"
check "the referrers' counters equal their referrals, within the caps" "
	SELECT c.customer_id FROM loyalty.referral_code c
	WHERE c.converted <> (SELECT count(*) FROM loyalty.referral r WHERE r.referrer_id = c.customer_id AND r.status = 'converted')
	   OR c.converted > 5
	UNION ALL
	SELECT p.customer_id FROM loyalty.referral_period p
	WHERE p.converted > 3
	   OR p.converted <> (SELECT count(*) FROM loyalty.referral r WHERE r.referrer_id = p.customer_id
						  AND r.status = 'converted' AND (r.converted_at AT TIME ZONE 'UTC')::date = p.period_start)"
check "one code per referrer, one owner per code" "
	SELECT customer_id FROM loyalty.referral_code_key GROUP BY customer_id HAVING count(*) > 1
	UNION ALL SELECT c.customer_id FROM loyalty.referral_code c
	LEFT JOIN loyalty.referral_code_key k ON k.code OPERATOR(loyalty.=) c.code AND k.customer_id = c.customer_id
	WHERE k.customer_id IS NULL"
check "no reward paid twice, none without a conversion, every refund taken back" "
	SELECT r.customer_id FROM loyalty.referral r
	CROSS JOIN LATERAL (VALUES ('referee', r.customer_id), ('referrer', r.referrer_id)) s(side, who)
	WHERE (SELECT count(*) FROM loyalty.points_ledger e
		   WHERE e.customer_id = s.who AND e.kind = 'earn'
			 AND e.reference = 'referral:' || r.customer_id || ':' || s.side)
		  <> CASE WHEN r.status IN ('converted', 'revoked') THEN 1 ELSE 0 END
	   OR (SELECT count(*) FROM loyalty.points_ledger e
		   WHERE e.customer_id = s.who AND e.kind = 'reverse'
			 AND e.reference = 'referral:' || r.customer_id || ':' || s.side)
		  <> CASE WHEN r.status = 'revoked' THEN 1 ELSE 0 END"
check "the referrers' points equal their rewards" "
	SELECT c.customer_id FROM loyalty.referral_code c
	WHERE COALESCE((SELECT sum(points) FROM loyalty.points_ledger e WHERE e.customer_id = c.customer_id), 0)
		  <> COALESCE((SELECT sum(referrer_points) FROM loyalty.referral r
					   WHERE r.referrer_id = c.customer_id AND r.status = 'converted'), 0)"
check "check_integrity" "SELECT * FROM loyalty.check_integrity()"
echo "referral_stress: every rule held"
