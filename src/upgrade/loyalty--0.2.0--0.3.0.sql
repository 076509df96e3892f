-- loyalty 0.2.0 -> 0.3.0: head of the upgrade script.
--
-- Frozen once 0.3.0 is released (hand-written, kept in the repository as
-- every release's upgrade script is).  Sections by concern, in order; the
-- access grants come last.  test/scripts/upgrade.sh proves that 0.1.0 ->
-- 0.2.0 -> 0.3.0 gives exactly a fresh 0.3.0 install and keeps every row.

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION loyalty UPDATE TO '0.3.0'" to load this file. \quit

/*
 * Refuse to update in a schema another role has prepared (the
 * CVE-2022-2625 class; see the check at the top of the install script).
 * ALTER EXTENSION runs this script as a superuser with search_path =
 * loyalty, pg_temp, so an object planted in the schema loyalty by a role
 * holding CREATE there (or owning it) would be resolved by the statements
 * below and run with the superuser's rights.  Before anything else:
 *   - the schema must be owned by a superuser;
 *   - it must grant CREATE to no role that is not a superuser (such a role
 *     could still add an object while this script runs);
 *   - every object in it that a name can resolve to must be a member of
 *     the extension (pg_depend deptype 'e'); implicit array and row types,
 *     the relation of a composite type and indexes of member tables count
 *     with what they belong to.
 * Everything here is pg_catalog's, named so.
 */
DO LANGUAGE plpgsql $loyalty_schema_check$
DECLARE
	nsp			pg_catalog.oid;
	ext			pg_catalog.oid;
	owner_name	pg_catalog.name;
	owner_super pg_catalog.bool;
	found_kind	pg_catalog.text;
	found_name	pg_catalog.text;
	grantee_name pg_catalog.text;
BEGIN
	SELECT e.oid, n.oid, r.rolname, r.rolsuper
	INTO ext, nsp, owner_name, owner_super
	FROM pg_catalog.pg_extension e
	JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace
	LEFT JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) n.nspowner
	WHERE e.extname OPERATOR(pg_catalog.=) 'loyalty'::pg_catalog.name;

	IF owner_super IS NOT TRUE THEN
		RAISE EXCEPTION 'schema "loyalty" is owned by role "%", which is not a superuser', owner_name
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'The owner of the schema loyalty can replace the objects the update script, running as a superuser, calls.',
				  HINT = 'Make a superuser own the schema (ALTER SCHEMA loyalty OWNER TO ...) after checking its contents, then update again.';
	END IF;

	SELECT COALESCE(g.rolname::pg_catalog.text, 'PUBLIC') INTO grantee_name
	FROM pg_catalog.pg_namespace n,
		 pg_catalog.aclexplode(n.nspacl) x
	LEFT JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) x.grantee
	WHERE n.oid OPERATOR(pg_catalog.=) nsp
	  AND x.privilege_type OPERATOR(pg_catalog.=) 'CREATE'::pg_catalog.text
	  AND g.rolsuper IS NOT TRUE
	LIMIT 1;

	SELECT x.kind, x.name INTO found_kind, found_name
	FROM (
		SELECT 'relation'::pg_catalog.text AS kind, c.relname::pg_catalog.text AS name,
			   'pg_catalog.pg_class'::pg_catalog.regclass AS classid, c.oid AS objid
		FROM pg_catalog.pg_class c
		WHERE c.relnamespace OPERATOR(pg_catalog.=) nsp
		  AND c.relkind OPERATOR(pg_catalog.<>) ALL (ARRAY['i', 'I', 'c']::pg_catalog."char"[])
		UNION ALL
		SELECT 'type', c.relname::pg_catalog.text, 'pg_catalog.pg_type'::pg_catalog.regclass, c.reltype
		FROM pg_catalog.pg_class c
		WHERE c.relnamespace OPERATOR(pg_catalog.=) nsp
		  AND c.relkind OPERATOR(pg_catalog.=) 'c'::pg_catalog."char"
		UNION ALL
		SELECT 'index', c.relname::pg_catalog.text, 'pg_catalog.pg_class'::pg_catalog.regclass, i.indrelid
		FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_index i ON i.indexrelid OPERATOR(pg_catalog.=) c.oid
		WHERE c.relnamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'function', p.proname::pg_catalog.text, 'pg_catalog.pg_proc'::pg_catalog.regclass, p.oid
		FROM pg_catalog.pg_proc p WHERE p.pronamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'type', t.typname::pg_catalog.text, 'pg_catalog.pg_type'::pg_catalog.regclass, t.oid
		FROM pg_catalog.pg_type t
		WHERE t.typnamespace OPERATOR(pg_catalog.=) nsp
		  AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
						  WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_type'::pg_catalog.regclass
							AND d.objid OPERATOR(pg_catalog.=) t.oid
							AND d.deptype OPERATOR(pg_catalog.=) 'i'::pg_catalog."char")
		UNION ALL
		SELECT 'operator', o.oprname::pg_catalog.text, 'pg_catalog.pg_operator'::pg_catalog.regclass, o.oid
		FROM pg_catalog.pg_operator o WHERE o.oprnamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'collation', co.collname::pg_catalog.text, 'pg_catalog.pg_collation'::pg_catalog.regclass, co.oid
		FROM pg_catalog.pg_collation co WHERE co.collnamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'conversion', cv.conname::pg_catalog.text, 'pg_catalog.pg_conversion'::pg_catalog.regclass, cv.oid
		FROM pg_catalog.pg_conversion cv WHERE cv.connamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'operator class', oc.opcname::pg_catalog.text, 'pg_catalog.pg_opclass'::pg_catalog.regclass, oc.oid
		FROM pg_catalog.pg_opclass oc WHERE oc.opcnamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'operator family', ofa.opfname::pg_catalog.text, 'pg_catalog.pg_opfamily'::pg_catalog.regclass, ofa.oid
		FROM pg_catalog.pg_opfamily ofa WHERE ofa.opfnamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'text search configuration', tc.cfgname::pg_catalog.text, 'pg_catalog.pg_ts_config'::pg_catalog.regclass, tc.oid
		FROM pg_catalog.pg_ts_config tc WHERE tc.cfgnamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'text search dictionary', td.dictname::pg_catalog.text, 'pg_catalog.pg_ts_dict'::pg_catalog.regclass, td.oid
		FROM pg_catalog.pg_ts_dict td WHERE td.dictnamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'text search parser', tp.prsname::pg_catalog.text, 'pg_catalog.pg_ts_parser'::pg_catalog.regclass, tp.oid
		FROM pg_catalog.pg_ts_parser tp WHERE tp.prsnamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'text search template', tt.tmplname::pg_catalog.text, 'pg_catalog.pg_ts_template'::pg_catalog.regclass, tt.oid
		FROM pg_catalog.pg_ts_template tt WHERE tt.tmplnamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'extension', e.extname::pg_catalog.text, NULL, NULL
		FROM pg_catalog.pg_extension e
		WHERE e.extnamespace OPERATOR(pg_catalog.=) nsp
		  AND e.oid OPERATOR(pg_catalog.<>) ext
	) x
	WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
					  WHERE d.classid OPERATOR(pg_catalog.=) x.classid
						AND d.objid OPERATOR(pg_catalog.=) x.objid
						AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
						AND d.refobjid OPERATOR(pg_catalog.=) ext
						AND d.deptype OPERATOR(pg_catalog.=) 'e'::pg_catalog."char")
	ORDER BY x.kind, x.name
	LIMIT 1;

	IF found_kind IS NOT NULL THEN
		RAISE EXCEPTION 'schema "loyalty" holds % % that is not part of extension loyalty',
			found_kind, found_name
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'The update script runs as a superuser with the schema loyalty first in its search path; an object another role put there could be called by it.',
				  HINT = 'Check who created it, drop it or move it to another schema (ALTER ... SET SCHEMA), then update again.';
	END IF;

	IF grantee_name IS NOT NULL THEN
		RAISE EXCEPTION 'schema "loyalty" grants CREATE to role "%"', grantee_name
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'A role that may create objects in the schema loyalty could add one the update script, running as a superuser, would call.',
				  HINT = pg_catalog.format('Revoke it (REVOKE CREATE ON SCHEMA loyalty FROM %s), then update again.',
								   grantee_name);
	END IF;
END
$loyalty_schema_check$;


/* ---------------------------------------------------------------------------
 * Section security: issue 11, trust (security).  The schema check runs
 * first, in the head (src/upgrade/0.2.0--0.3.0.sql).
 * ------------------------------------------------------------------------ */

-- points family, 0.2.0 -> 0.3.0 (issue 11: references, exchanges, business
-- times, program currency, parallel restore).  Every object below is
-- created or re-created exactly as in a fresh 0.3.0 install, except
-- exchange_points and check_integrity, whose final bodies (they also count
-- codes sold for points and the references of configuration rows) are in
-- 50-followup.sql.

-- the program currency (earn_for_order refuses others: LP011)
ALTER TABLE loyalty.points_program
	ADD COLUMN currency text NOT NULL DEFAULT 'EUR'
		CONSTRAINT points_program_currency_check CHECK (currency ~ '^[A-Z]{3}$');
COMMENT ON COLUMN loyalty.points_program.currency IS
	'The program currency (ISO 4217): earn_for_order takes amounts in it only (LP011 for another), so qualifying spend never adds up currencies';

-- no foreign key between extension tables that pg_restore --jobs loads in
-- parallel: a rename cascades and deleting a tier in use is refused by a
-- trigger instead, check_integrity() reports an unknown tier
ALTER TABLE loyalty.points_account DROP CONSTRAINT points_account_tier_fkey;

-- bounded backdating: the business time of the last settlement; the last
-- expiry entry is the best known value for existing accounts
ALTER TABLE loyalty.points_account ADD COLUMN settled_at timestamptz;
UPDATE loyalty.points_account a
   SET settled_at = (SELECT max(e.effective_at) FROM loyalty.points_ledger e
					 WHERE e.customer_id = a.customer_id AND e.kind = 'expire');
COMMENT ON COLUMN loyalty.points_account.settled_at IS
	'Latest business time the account was settled as of (lots expired or made available); calls may not be dated more than 5 minutes before it';

/*
 * The one owner of each caller reference.  Its primary key makes "a
 * reference belongs to exactly one customer" a constraint: every mutating
 * call claims its reference here (INSERT ... ON CONFLICT DO NOTHING, then
 * the owner is read) after locking the account, so two customers' calls
 * racing for one reference serialise on the unique index and the second
 * gets LP002.  Citus: this is the documented exception to "per-customer
 * tables are keyed by (customer_id, ...)": a reference is global by
 * definition (an order id is unique in the shop, not per customer), so the
 * table is distributed by reference in its own colocation group; a claim is
 * one single-shard insert routed by the reference, inside the call's
 * distributed transaction.  Keying it by (customer_id, reference) would let
 * every customer hold the same reference again, which is the defect.
 */
CREATE TABLE loyalty.points_reference (
	reference	text PRIMARY KEY,
	customer_id	text NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now()
);

COMMENT ON TABLE loyalty.points_reference IS
	'Owner of every points reference (order id, idempotency key): one customer per reference, by primary key';

SELECT pg_catalog.pg_extension_config_dump('loyalty.points_reference', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.points_reference'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

-- each reference's first customer becomes its owner (a reference two
-- customers already share stays reported by check_integrity())
INSERT INTO loyalty.points_reference (reference, customer_id, created_at)
SELECT DISTINCT ON (e.reference) e.reference, e.customer_id, e.created_at
  FROM loyalty.points_ledger e
 WHERE e.reference IS NOT NULL
 ORDER BY e.reference, e.entry_id;

/*
 * Accounts name their tier without a foreign key (see points_account): a
 * rename is carried to the accounts (as ON UPDATE CASCADE did) and to
 * their tier history, as the owner (admins cannot write either), and a
 * tier that accounts hold
 * cannot be deleted.  Row triggers on UPDATE and DELETE only: pg_restore's
 * COPY of the ladder fires neither.
 */
CREATE FUNCTION loyalty._tier_in_use()
RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF TG_OP = 'UPDATE' THEN
		IF NEW.name OPERATOR(pg_catalog.<>) OLD.name THEN
			UPDATE loyalty.points_account a SET tier = NEW.name
			WHERE a.tier OPERATOR(pg_catalog.=) OLD.name;
			-- the same tier under a new name: its history follows
			UPDATE loyalty.tier_history h SET to_tier = NEW.name
			WHERE h.to_tier OPERATOR(pg_catalog.=) OLD.name;
			UPDATE loyalty.tier_history h SET from_tier = NEW.name
			WHERE h.from_tier OPERATOR(pg_catalog.=) OLD.name;
		END IF;
		RETURN NEW;
	END IF;
	IF EXISTS (SELECT 1 FROM loyalty.points_account a WHERE a.tier OPERATOR(pg_catalog.=) OLD.name) THEN
		RAISE EXCEPTION 'tier "%" is held by points accounts', OLD.name
			USING ERRCODE = 'foreign_key_violation',
				  DETAIL = 'A tier can be deleted once no account holds it.',
				  HINT = 'Move the accounts to another tier first, or rename the tier.';
	END IF;
	RETURN OLD;
END;
$$;

COMMENT ON FUNCTION loyalty._tier_in_use() IS
	'Internal: carry a tier rename to the accounts and their tier history; refuse deleting a tier accounts hold';

CREATE TRIGGER tier_in_use
	AFTER UPDATE OF name OR DELETE ON loyalty.tier
	FOR EACH ROW EXECUTE FUNCTION loyalty._tier_in_use();

COMMENT ON TRIGGER tier_in_use ON loyalty.tier IS
	'Carry a tier rename to the accounts; refuse deleting a tier accounts hold (instead of a foreign key, see points_account)';

CREATE FUNCTION loyalty._points_check_key(name text, value text)
RETURNS void
AS 'MODULE_PATHNAME', 'points_check_key'
LANGUAGE C STABLE;

COMMENT ON FUNCTION loyalty._points_check_key(text, text) IS
	'Internal: raise 22023 unless value is a customer id or reference of 1 to 256 bytes (the one limit of every loyalty function), 23502 if null';

CREATE FUNCTION loyalty._points_inserted_here(row_xmin xid)
RETURNS boolean
AS 'MODULE_PATHNAME', 'points_inserted_here'
LANGUAGE C STABLE STRICT;

COMMENT ON FUNCTION loyalty._points_inserted_here(xid) IS
	'Internal: whether a row with this xmin was inserted by the current transaction (or one of its subtransactions)';

-- a voided code (its exchange was reversed) is unknown to the coupon calls
ALTER TABLE loyalty.coupon ADD COLUMN voided_at timestamptz;
COMMENT ON COLUMN loyalty.coupon.voided_at IS
	'When the code was voided (its points exchange was reversed); a voided code is unknown to validate, reserve and redeem';

/*
 * Called by reverse_points for the spend entry it reverses: if that spend
 * bought a coupon (exchange_points), the coupon is voided -- or, once it was
 * redeemed or is reserved, the reversal is refused (LP010): points back and
 * a usable code would pay the coupon twice.  The coupon row is locked as
 * redeem_coupon and reserve_coupon lock it, so a concurrent redemption
 * either commits first (and is seen here) or finds the code voided.
 */
CREATE OR REPLACE FUNCTION loyalty._points_exchange_void(spend_entry bigint, at timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	ex record;
	cp record;
BEGIN
	SELECT e.reference, e.coupon_id, e.code INTO ex
	FROM loyalty.points_exchange e WHERE e.entry_id = spend_entry;
	IF NOT FOUND THEN
		RETURN;
	END IF;
	SELECT c.uses, c.voided_at INTO cp
	FROM loyalty.coupon c WHERE c.coupon_id = ex.coupon_id FOR NO KEY UPDATE;
	IF NOT FOUND OR cp.voided_at IS NOT NULL THEN
		RETURN;
	END IF;
	IF cp.uses > 0 OR EXISTS (SELECT 1 FROM loyalty.reservation h
							  WHERE h.coupon_id = ex.coupon_id AND h.state = 'held' AND h.expires_at > at) THEN
		RAISE EXCEPTION 'exchange "%" cannot be reversed: its coupon is %', ex.reference,
			CASE WHEN cp.uses > 0 THEN 'redeemed' ELSE 'reserved' END
			USING ERRCODE = 'LP010',
				  DETAIL = format('Coupon %s is in use; reversing the exchange would return the points while the coupon stays used.',
								  ex.code),
				  HINT = 'Roll the redemption back first (rollback_redemption), or let the reservation expire.';
	END IF;
	UPDATE loyalty.coupon c SET voided_at = at WHERE c.coupon_id = ex.coupon_id;
END;
$$;

COMMENT ON FUNCTION loyalty._points_exchange_void(bigint, timestamptz) IS
	'Internal: when reverse_points reverses an exchange''s spend, void its coupon, or refuse (LP010) once it is redeemed or reserved';

/*
 * Bonus points for the coupons an order used: the order's redemptions that
 * are not rolled back, by this customer, of campaigns with a bonus.  Credited
 * under reference order_ref || ':coupon-bonus', so a repeat returns the first
 * result and reverse_points(order_ref || ':coupon-bonus') takes the bonus
 * back on a refund.  NULL when no coupon of the order earns a bonus.
 */
CREATE OR REPLACE FUNCTION loyalty.earn_coupon_bonus(customer_id text, order_ref text,
										  at timestamptz DEFAULT pg_catalog.now())
RETURNS loyalty.points_receipt
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	total bigint;
	codes text;
	receipt loyalty.points_receipt;
BEGIN
	IF customer_id IS NULL OR order_ref IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, order_ref and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, customer_id);
	PERFORM loyalty._points_check_key('order_ref'::text, order_ref);
	SELECT sum(b.points), string_agg(c.code::text, ', ' ORDER BY c.code::text)
	INTO total, codes
	FROM loyalty.redemption r
	JOIN loyalty.coupon_bonus b ON b.campaign_id = r.campaign_id
	JOIN loyalty.coupon c ON c.coupon_id = r.coupon_id
	WHERE r.order_ref = earn_coupon_bonus.order_ref AND r.kind = 'redeem'
	  AND r.customer_id = earn_coupon_bonus.customer_id
	  AND NOT EXISTS (SELECT 1 FROM loyalty.redemption x WHERE x.reverses = r.redemption_id);
	IF total IS NULL THEN
		RETURN NULL;
	END IF;
	SELECT * INTO receipt
	FROM loyalty.earn_points(earn_coupon_bonus.customer_id, total, earn_coupon_bonus.order_ref || ':coupon-bonus',
							 reason => 'coupon bonus: ' || codes, qualifying => false, at => at);
	RETURN receipt;
END;
$$;

COMMENT ON FUNCTION loyalty.earn_coupon_bonus(text, text, timestamptz) IS
	'Credit the bonus points (loyalty.coupon_bonus) of the coupons an order redeemed, under reference <order_ref>:coupon-bonus; NULL when none earns a bonus';

CREATE OR REPLACE FUNCTION loyalty.tier_progress(customer_id text, at timestamptz DEFAULT pg_catalog.now(),
									  OUT tier text, OUT qualifying numeric, OUT basis text,
									  OUT next_tier text, OUT missing numeric,
									  OUT keeps_tier boolean, OUT message text)
RETURNS record
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cur record;
	nxt record;
BEGIN
	IF tier_progress.customer_id IS NULL OR tier_progress.at IS NULL THEN
		RAISE EXCEPTION 'customer_id and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, tier_progress.customer_id);
	SELECT coalesce(p.tier_basis, 'points') INTO basis
	FROM (SELECT 1) one LEFT JOIN loyalty.points_program p ON true;

	SELECT a.tier, t.rank, t.threshold INTO cur
	FROM loyalty.points_account a LEFT JOIN loyalty.tier t ON t.name = a.tier
	WHERE a.customer_id = tier_progress.customer_id;
	tier := cur.tier;
	qualifying := trim_scale(coalesce(loyalty._points_tier_value(tier_progress.customer_id, tier_progress.at), 0));
	keeps_tier := cur.threshold IS NULL OR qualifying >= cur.threshold;

	SELECT n.name, n.threshold INTO nxt
	FROM loyalty.tier n
	WHERE (cur.rank IS NULL AND n.threshold > 0) OR n.rank > cur.rank
	ORDER BY n.rank LIMIT 1;
	IF FOUND THEN
		next_tier := nxt.name;
		missing := trim_scale(greatest(nxt.threshold - qualifying, 0));
	END IF;
	IF NOT keeps_tier THEN
		message := format(CASE basis WHEN 'points' THEN '%s points to keep %s' ELSE '%s more spend to keep %s' END,
						  trim_scale(cur.threshold - qualifying), tier);
	ELSIF next_tier IS NOT NULL THEN
		message := format(CASE basis WHEN 'points' THEN '%s points to %s' ELSE '%s more spend to %s' END,
						  missing, next_tier);
	ELSIF tier IS NOT NULL THEN
		message := format('top tier %s reached', tier);
	ELSE
		message := 'no tiers configured';
	END IF;
END;
$$;

COMMENT ON FUNCTION loyalty.tier_progress(text, timestamptz) IS
	'Tier of a customer, qualifying points (or spend) in the window, the next tier and what is missing ("120 points to Gold"), whether the current tier''s threshold is still met (else the message says what keeps it)';

CREATE OR REPLACE FUNCTION loyalty.evaluate_tiers_batch(as_of timestamptz, after_customer text, batch_size integer,
											 OUT last_customer text, OUT accounts integer,
											 OUT upgrades integer, OUT downgrades integer)
RETURNS record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	ids text[];
	grace interval;
BEGIN
	IF as_of IS NULL OR batch_size IS NULL THEN
		RAISE EXCEPTION 'as_of and batch_size must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF batch_size < 1 THEN
		RAISE EXCEPTION 'batch_size must be positive, not %', batch_size
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	-- as every points call: no business time beyond 5 minutes ahead
	IF as_of > clock_timestamp() + interval '300 seconds' THEN
		RAISE EXCEPTION 'as_of must not lie in the future'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('as_of is %s; points calls accept business times up to 300 seconds ahead of the server clock.', as_of);
	END IF;
	SELECT make_interval(days => coalesce(p.tier_grace_days, 30)) INTO grace
	FROM (SELECT 1) one LEFT JOIN loyalty.points_program p ON true;

	SELECT array_agg(s.customer_id ORDER BY s.customer_id) INTO ids
	FROM (SELECT a.customer_id FROM loyalty.points_account a
		  WHERE after_customer IS NULL OR a.customer_id > after_customer
		  ORDER BY a.customer_id LIMIT batch_size
		  FOR NO KEY UPDATE) s;
	accounts := coalesce(cardinality(ids), 0);
	last_customer := ids[accounts];
	upgrades := 0;
	downgrades := 0;
	IF accounts = 0 THEN
		RETURN;
	END IF;

	WITH judged AS (
		SELECT a.customer_id, a.tier, a.below_since, cur.rank, cur.threshold,
			   v.value, target.name AS target, target.rank AS target_rank,
			   down.name AS down, down.threshold AS down_threshold
		FROM loyalty.points_account a
		LEFT JOIN loyalty.tier cur ON cur.name = a.tier
		CROSS JOIN LATERAL (SELECT coalesce(loyalty._points_tier_value(a.customer_id, as_of), 0) AS value) v
		LEFT JOIN LATERAL (SELECT t.name, t.rank FROM loyalty.tier t WHERE t.threshold <= v.value
						   ORDER BY t.rank DESC LIMIT 1) target ON true
		LEFT JOIN LATERAL (SELECT t.name, t.threshold FROM loyalty.tier t WHERE t.rank < cur.rank
						   ORDER BY t.rank DESC LIMIT 1) down ON true
		WHERE a.customer_id = ANY (ids)
	), decided AS (
		SELECT j.*,
			   CASE
				   WHEN j.target IS NOT NULL AND (j.rank IS NULL OR j.target_rank > j.rank) THEN 'upgrade'
				   WHEN j.rank IS NOT NULL AND (j.target IS NULL OR j.target_rank < j.rank)
						AND coalesce(j.below_since, as_of) <= as_of - grace THEN 'downgrade'
			   END AS change
		FROM judged j
	), outcome AS (
		SELECT d.customer_id, d.tier AS from_tier, d.value, d.change,
			   CASE d.change WHEN 'upgrade' THEN d.target WHEN 'downgrade' THEN d.down ELSE d.tier END AS new_tier,
			   CASE
				   WHEN d.change = 'upgrade' THEN NULL
				   WHEN d.change = 'downgrade' THEN
					   CASE WHEN d.down IS NOT NULL AND d.value < d.down_threshold THEN as_of END
				   WHEN d.rank IS NOT NULL AND (d.target IS NULL OR d.target_rank < d.rank)
					   THEN coalesce(d.below_since, as_of)
			   END AS new_below_since
		FROM decided d
	), updated AS (
		UPDATE loyalty.points_account a
		SET tier = o.new_tier,
			tier_since = CASE WHEN o.change IS NOT NULL THEN as_of ELSE a.tier_since END,
			below_since = o.new_below_since,
			updated_at = now()
		FROM outcome o
		WHERE a.customer_id = o.customer_id
		  AND (a.tier IS DISTINCT FROM o.new_tier OR a.below_since IS DISTINCT FROM o.new_below_since)
	), history AS (
		INSERT INTO loyalty.tier_history (customer_id, changed_at, from_tier, to_tier, change, qualifying)
		SELECT o.customer_id, as_of, o.from_tier, o.new_tier, o.change, o.value
		FROM outcome o WHERE o.change IS NOT NULL
	)
	SELECT count(*) FILTER (WHERE o.change = 'upgrade'), count(*) FILTER (WHERE o.change = 'downgrade')
	INTO upgrades, downgrades
	FROM outcome o;
END;
$$;

COMMENT ON FUNCTION loyalty.evaluate_tiers_batch(timestamptz, text, integer) IS
	'One batch of evaluate_tiers: judge the next batch_size accounts after after_customer; returns the last one and the counts';


-- 30-coupons: coupon family changes since 0.2.0 (issue 11)
--   * loyalty.currency_decimals(text): minor units of a currency
--   * _campaign_check: limits (amount_off, max_discount) with more decimals
--     than the currency are refused; amounts below 10^15; list sizes
--   * add_campaign_rule: segment and tier names must exist (its final body,
--     which also locks the campaign and kind, is in 50-followup.sql)
--   * _campaign_rule_names_follow and its triggers on loyalty.segment and
--     loyalty.tier: renames carry over to campaign rules, deletes of a named
--     segment or tier are refused
-- Existing rows are kept as they are: a 0.2.0 campaign with an over-precise
-- limit is honoured by truncating the limit (C), a 0.2.0 rule naming a tier
-- that no longer exists validates as config_error (C).

CREATE FUNCTION loyalty.currency_decimals(currency text)
RETURNS integer
AS 'MODULE_PATHNAME', 'coupon_currency_decimals'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.currency_decimals(text) IS
	'Minor units (decimals) of an ISO 4217 currency as coupon discounts use them: 2 unless listed otherwise (JPY 0, KWD 3, CLF 4, ...)';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.currency_decimals(text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE OR REPLACE FUNCTION loyalty._campaign_check(c loyalty.campaign)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	problem text;
	decimals integer;
	too_precise record;
BEGIN
	problem := CASE
		WHEN c.name IS NULL OR c.name = '' THEN
			'name must be a non-empty text'
		WHEN c.kind IS NULL OR c.kind NOT IN ('percent', 'fixed', 'free_shipping', 'buy_x_get_y', 'free_item') THEN
			format('kind must be percent, fixed, free_shipping, buy_x_get_y or free_item, not %L', c.kind)
		WHEN c.currency IS NULL OR c.currency !~ '^[A-Z]{3}$' THEN
			'currency must be three upper-case letters (ISO 4217)'
		WHEN c.kind = 'percent' AND (c.percent_off IS NULL OR c.percent_off <= 0 OR c.percent_off > 100) THEN
			'a percent campaign needs percent_off in (0, 100]'
		WHEN c.kind <> 'percent' AND c.percent_off IS NOT NULL THEN
			'percent_off applies to percent campaigns only'
		WHEN c.kind = 'fixed' AND (c.amount_off IS NULL OR c.amount_off <= 0) THEN
			'a fixed campaign needs a positive amount_off'
		WHEN c.kind <> 'fixed' AND c.amount_off IS NOT NULL THEN
			'amount_off applies to fixed campaigns only'
		WHEN c.kind = 'fixed' AND c.max_discount IS NOT NULL THEN
			'max_discount does not apply to fixed campaigns'
		WHEN c.max_discount IS NOT NULL AND c.max_discount <= 0 THEN
			'max_discount must be positive'
		WHEN c.amount_off >= 1e15 OR c.max_discount >= 1e15 OR c.min_order_amount >= 1e15 THEN
			'amount_off, max_discount and min_order_amount must be finite numbers below 10^15'
		WHEN c.kind = 'buy_x_get_y' AND (c.buy_quantity IS NULL OR c.buy_quantity < 1
										OR c.get_quantity IS NULL OR c.get_quantity < 1) THEN
			'a buy_x_get_y campaign needs buy_quantity >= 1 and get_quantity >= 1'
		WHEN c.kind <> 'buy_x_get_y' AND (c.buy_quantity IS NOT NULL OR c.get_quantity IS NOT NULL) THEN
			'buy_quantity and get_quantity apply to buy_x_get_y campaigns only'
		WHEN c.kind = 'free_item' AND (c.free_sku IS NULL OR c.free_sku = '') THEN
			'a free_item campaign needs free_sku'
		WHEN c.kind = 'free_item' AND (c.free_quantity IS NULL OR c.free_quantity < 1) THEN
			'free_quantity must be at least 1'
		WHEN c.kind <> 'free_item' AND (c.free_sku IS NOT NULL OR c.free_quantity IS NOT NULL) THEN
			'free_sku and free_quantity apply to free_item campaigns only'
		WHEN c.starts_at IS NOT NULL AND c.ends_at IS NOT NULL AND c.ends_at <= c.starts_at THEN
			'ends_at must be after starts_at'
		WHEN c.total_cap IS NOT NULL AND c.total_cap < 0 THEN
			'total_cap must not be negative'
		WHEN c.per_customer_cap IS NOT NULL AND c.per_customer_cap < 1 THEN
			'per_customer_cap must be at least 1'
		WHEN c.max_coupons_per_order IS NOT NULL AND c.max_coupons_per_order < 1 THEN
			'max_coupons_per_order must be at least 1'
		WHEN c.min_order_amount IS NOT NULL AND c.min_order_amount < 0 THEN
			'min_order_amount must not be negative'
		WHEN c.exclusive IS NULL THEN
			'exclusive must be true or false'
		WHEN array_position(c.include_skus, NULL) IS NOT NULL
		  OR array_position(c.exclude_skus, NULL) IS NOT NULL
		  OR array_position(c.include_categories, NULL) IS NOT NULL
		  OR array_position(c.exclude_categories, NULL) IS NOT NULL
		  OR '' = ANY (c.include_skus) OR '' = ANY (c.exclude_skus)
		  OR '' = ANY (c.include_categories) OR '' = ANY (c.exclude_categories) THEN
			'sku and category lists must not contain nulls or empty texts'
		WHEN cardinality(c.include_skus) = 0 OR cardinality(c.exclude_skus) = 0
		  OR cardinality(c.include_categories) = 0 OR cardinality(c.exclude_categories) = 0 THEN
			'an empty sku or category list must be null'
		WHEN cardinality(c.include_skus) > 10000 OR cardinality(c.exclude_skus) > 10000
		  OR cardinality(c.include_categories) > 10000 OR cardinality(c.exclude_categories) > 10000 THEN
			'a sku or category list has at most 10000 entries'
		WHEN EXISTS (SELECT 1 FROM unnest(c.include_skus || c.exclude_skus || c.include_categories
										  || c.exclude_categories) AS e(name)
					 WHERE octet_length(e.name) > 256) THEN
			'a sku or category name has at most 256 bytes'
	END;
	IF problem IS NOT NULL THEN
		RAISE EXCEPTION 'invalid campaign: %', problem
			USING ERRCODE = 'invalid_parameter_value';
	END IF;

	-- a discount never exceeds its limit, so a limit must be payable exactly
	decimals := loyalty.currency_decimals(c.currency);
	SELECT l.field, l.value INTO too_precise
	FROM (VALUES (1, 'amount_off', c.amount_off), (2, 'max_discount', c.max_discount)) AS l(pos, field, value)
	WHERE l.value IS NOT NULL
	  AND l.value OPERATOR(pg_catalog.<>) pg_catalog.trunc(l.value, decimals)
	ORDER BY l.pos LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'invalid campaign: % % has more decimals than % allows', too_precise.field,
			too_precise.value, c.currency
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('%s has %s decimal%s (ISO 4217 minor units); a discount is never more than its limit, so %s must be a whole number of minor units.',
								  c.currency, decimals, CASE WHEN decimals = 1 THEN '' ELSE 's' END,
								  too_precise.field),
				  HINT = format('Give %s with at most %s decimal%s.', too_precise.field, decimals,
								CASE WHEN decimals = 1 THEN '' ELSE 's' END);
	END IF;
END;
$$;

COMMENT ON FUNCTION loyalty._campaign_check(loyalty.campaign) IS
	'Internal: raise 22023 naming the first invalid field of a campaign row (limits with more decimals than the currency: the DETAIL names its decimals)';

CREATE FUNCTION loyalty._campaign_rule_names_follow()
RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	rule_kind text := CASE TG_TABLE_NAME WHEN 'segment' THEN 'segment' ELSE 'tier' END;
	used record;
BEGIN
	IF TG_OP = 'UPDATE' THEN
		UPDATE loyalty.campaign_rule r
		SET params = CASE
				WHEN rule_kind = 'segment' THEN
					jsonb_set(r.params, '{segments}',
							  (SELECT jsonb_agg(CASE WHEN e.v OPERATOR(pg_catalog.=) to_jsonb(OLD.name)
													 THEN to_jsonb(NEW.name) ELSE e.v END ORDER BY e.n)
							   FROM jsonb_array_elements(r.params -> 'segments') WITH ORDINALITY AS e(v, n)))
				WHEN r.params ? 'min_tier' THEN
					CASE WHEN r.params ->> 'min_tier' OPERATOR(pg_catalog.=) OLD.name
						 THEN jsonb_set(r.params, '{min_tier}', to_jsonb(NEW.name)) ELSE r.params END
				ELSE
					jsonb_set(r.params, '{tiers}',
							  (SELECT jsonb_agg(CASE WHEN e.v OPERATOR(pg_catalog.=) to_jsonb(OLD.name)
													 THEN to_jsonb(NEW.name) ELSE e.v END ORDER BY e.n)
							   FROM jsonb_array_elements(r.params -> 'tiers') WITH ORDINALITY AS e(v, n)))
			END
		WHERE r.kind OPERATOR(pg_catalog.=) rule_kind
		  AND (r.params -> CASE rule_kind WHEN 'segment' THEN 'segments' ELSE 'tiers' END ? OLD.name
			   OR (rule_kind = 'tier' AND r.params ->> 'min_tier' OPERATOR(pg_catalog.=) OLD.name));
		RETURN NULL;
	END IF;

	IF pg_catalog.pg_trigger_depth() > 1 THEN
		RETURN NULL;
	END IF;
	SELECT r.rule_id, c.campaign_id, c.name INTO used
	FROM loyalty.campaign_rule r JOIN loyalty.campaign c ON c.campaign_id OPERATOR(pg_catalog.=) r.campaign_id
	WHERE r.kind OPERATOR(pg_catalog.=) rule_kind
	  AND (r.params -> CASE rule_kind WHEN 'segment' THEN 'segments' ELSE 'tiers' END ? OLD.name
		   OR (rule_kind = 'tier' AND r.params ->> 'min_tier' OPERATOR(pg_catalog.=) OLD.name))
	ORDER BY r.rule_id LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'cannot delete % "%": a campaign rule names it', rule_kind, OLD.name
			USING ERRCODE = 'foreign_key_violation',
				  DETAIL = format('Rule %s of campaign %L (id %s) names %s %L.',
								  used.rule_id, used.name, used.campaign_id, rule_kind, OLD.name),
				  HINT = 'Drop the rule with loyalty.drop_campaign_rule() first; a rename carries over to campaign rules.';
	END IF;
	RETURN NULL;
END;
$$;

COMMENT ON FUNCTION loyalty._campaign_rule_names_follow() IS
	'Internal trigger on loyalty.segment and loyalty.tier: a rename carries over to the campaign rules naming it; deleting one a campaign rule names is refused (23503)';

CREATE TRIGGER segment_campaign_rule_rename
	AFTER UPDATE OF name ON loyalty.segment
	FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name)
	EXECUTE FUNCTION loyalty._campaign_rule_names_follow();
CREATE TRIGGER segment_campaign_rule_delete
	AFTER DELETE ON loyalty.segment
	FOR EACH ROW EXECUTE FUNCTION loyalty._campaign_rule_names_follow();

COMMENT ON TRIGGER segment_campaign_rule_rename ON loyalty.segment IS
	'A renamed segment is renamed in the campaign rules that name it';
COMMENT ON TRIGGER segment_campaign_rule_delete ON loyalty.segment IS
	'Refuse deleting a segment a campaign rule names (23503)';

CREATE TRIGGER tier_campaign_rule_rename
	AFTER UPDATE OF name ON loyalty.tier
	FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name)
	EXECUTE FUNCTION loyalty._campaign_rule_names_follow();
CREATE TRIGGER tier_campaign_rule_delete
	AFTER DELETE ON loyalty.tier
	FOR EACH ROW EXECUTE FUNCTION loyalty._campaign_rule_names_follow();

COMMENT ON TRIGGER tier_campaign_rule_rename ON loyalty.tier IS
	'A renamed tier is renamed in the campaign rules that name it';
COMMENT ON TRIGGER tier_campaign_rule_delete ON loyalty.tier IS
	'Refuse deleting a tier a campaign rule names (23503)';

-- 0.2.0 -> 0.3.0, live RFM tracking (issue 11, item 12): tracked statements
-- append per-customer deltas to loyalty.customer_stats_delta instead of
-- updating loyalty.customer_stats; refresh_segments and fold_tracking fold
-- them in, customer_rfm adds the pending ones.
--
-- Data: loyalty.customer_stats keeps its columns and rows unchanged (it is
-- the folded state, which is what 0.2.0's triggers kept current), so every
-- customer's statistics survive as they are; the delta table starts empty
-- and the existing tracking triggers (same function) append to it from the
-- first statement after the update.  Item 2 needs no SQL change (C only).

CREATE FUNCTION loyalty._rfm_days_minus(loyalty.day_buckets, loyalty.day_buckets)
RETURNS loyalty.day_buckets
AS 'MODULE_PATHNAME', 'rfm_days_minus'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_days_minus(loyalty.day_buckets, loyalty.day_buckets) IS
	'Internal: added minus removed day buckets of pending changes, as a delta (NULL = no bucket)';

CREATE AGGREGATE loyalty._rfm_days_fold(loyalty.day_buckets) (
	SFUNC = loyalty._rfm_days_merge,
	STYPE = loyalty.day_buckets
);

COMMENT ON AGGREGATE loyalty._rfm_days_fold(loyalty.day_buckets) IS
	'Internal: the sum of pending day-bucket deltas (NULL = no bucket)';

COMMENT ON TABLE loyalty.customer_stats IS
	'Per-customer statistics of the tracked orders tables as of the last fold; pending changes are in loyalty.customer_stats_delta';

CREATE TABLE loyalty.customer_stats_delta (
	customer_id		text COLLATE "C" NOT NULL,
	row_count		bigint NOT NULL,
	order_count		bigint NOT NULL,
	spend_total		numeric NOT NULL,
	first_added		timestamptz,
	last_added		timestamptz,
	first_removed	timestamptz,
	last_removed	timestamptz,
	days			loyalty.day_buckets,
	days_removed	loyalty.day_buckets
);

CREATE INDEX customer_stats_delta_customer ON loyalty.customer_stats_delta (customer_id);

COMMENT ON TABLE loyalty.customer_stats_delta IS
	'Pending changes of the live statistics, appended by the tracking triggers and folded into loyalty.customer_stats by refresh_segments and fold_tracking';
COMMENT ON COLUMN loyalty.customer_stats_delta.row_count IS
	'Tracked rows added minus removed by one statement';
COMMENT ON COLUMN loyalty.customer_stats_delta.order_count IS
	'Orders added minus removed by one statement';
COMMENT ON COLUMN loyalty.customer_stats_delta.spend_total IS
	'Amounts added minus removed by one statement';
COMMENT ON COLUMN loyalty.customer_stats_delta.first_added IS
	'Earliest order time added (NULL: no order added)';
COMMENT ON COLUMN loyalty.customer_stats_delta.last_added IS
	'Latest order time added (NULL: no order added)';
COMMENT ON COLUMN loyalty.customer_stats_delta.first_removed IS
	'Earliest order time removed (NULL: no order removed)';
COMMENT ON COLUMN loyalty.customer_stats_delta.last_removed IS
	'Latest order time removed (NULL: no order removed)';
COMMENT ON COLUMN loyalty.customer_stats_delta.days IS
	'Net change of orders and spend per UTC day made by one statement, for the days whose order count did not fall';
COMMENT ON COLUMN loyalty.customer_stats_delta.days_removed IS
	'Opposite of the net change per UTC day made by one statement, for the days whose order count fell (stored buckets never hold negative counts)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.customer_stats_delta', '');

COMMENT ON FUNCTION loyalty._rfm_track_trigger() IS
	'Internal: statement trigger of a tracked orders table; appends the statement''s delta to loyalty.customer_stats_delta as the extension''s owner';

CREATE FUNCTION loyalty.fold_tracking(OUT folded_rows bigint, OUT customers bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'rfm_fold_tracking'
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.fold_tracking() IS
	'Fold the pending tracked changes (loyalty.customer_stats_delta) into loyalty.customer_stats now, as refresh_segments does first';
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.fold_tracking()'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

-- Item 2: tracked customer and status columns must now be of a built-in
-- type (see track_orders).  Refuse the update, naming the table (42804,
-- "call loyalty.untrack_orders() before ..."), rather than let every later
-- write to a table tracked with another type fail.
SELECT loyalty._rfm_check_tracked();

-- 0.2.0 -> 0.3.0, live RFM performance (issue 11, bars): the pending-change
-- table loses its customer_id index, which every tracked statement paid for
-- (half of the trigger's cost); folds read the whole table anyway and
-- customer_rfm scans the pending rows (rfm_track.sql).  Runs after
-- 40-tracking.sql, which creates the table.

DROP INDEX loyalty.customer_stats_delta_customer;

/* ---------------------------------------------------------------------------
 * Section followup: issue 11 follow-ups (items 11, 4, 14 remainders)
 *   * no foreign key between extension tables, so that pg_restore --jobs
 *     loads them in any order: segment_rule -> segment (rename carried and
 *     delete refused by the segment_in_use trigger, a rule's segment checked
 *     by _segment_map_row), campaign_rule -> campaign and -> eligibility_kind
 *     (checked and locked by add_campaign_rule, deletes refused by the
 *     parent-side triggers campaign_rule_parent and eligibility_kind_in_use);
 *     check_integrity() reports dangling references; a restored segment map
 *     replaces the default one whichever table is loaded first
 *   * reset_segment_map() keeps default-named segments and refuses (23503)
 *     to drop a segment a campaign rule names
 *   * coupon.holds_cap_unit: a code sold for points holds its cap unit
 *     until used or voided, counted by the coupon cap checks;
 *     _coupon_cap_units replaces _points_cap_in_use in exchange_points
 * Existing data: codes already sold by exchanges are marked as holding
 * their unit.
 * ------------------------------------------------------------------------ */

-- segment map
ALTER TABLE loyalty.segment_rule DROP CONSTRAINT segment_rule_segment_fkey;
CREATE OR REPLACE FUNCTION loyalty._segment_map_row()
RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NEW.builtin THEN
		IF TG_OP = 'UPDATE' AND OLD.builtin THEN
			NEW.builtin := false;	-- editing a default row makes the map the user's
			RETURN NEW;
		END IF;
		RAISE EXCEPTION 'builtin rows of %.% are created only by the loyalty extension', TG_TABLE_SCHEMA, TG_TABLE_NAME
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Leave the builtin column out of INSERT and UPDATE.';
	END IF;
	IF TG_OP = 'UPDATE' OR NEW.builtin IS NULL THEN
		NEW.builtin := false;
	-- builtin = false given explicitly: a saved map is being loaded
	ELSIF EXISTS (SELECT 1 FROM loyalty.segment s WHERE s.builtin)
	   OR EXISTS (SELECT 1 FROM loyalty.segment_rule r WHERE r.builtin) THEN
		-- drop the default map, rules first; the rules go without a
		-- coverage check when the segments are loaded first (the rules
		-- that follow are checked at their commit)
		IF TG_TABLE_NAME = 'segment' THEN
			TRUNCATE loyalty.segment_rule;
		ELSE
			DELETE FROM loyalty.segment_rule r WHERE r.builtin;
		END IF;
		DELETE FROM loyalty.segment s WHERE s.builtin;
	END IF;
	IF TG_TABLE_NAME = 'segment_rule' THEN
		IF NOT EXISTS (SELECT 1 FROM loyalty.segment s WHERE s.name OPERATOR(pg_catalog.=) NEW.segment)
		   AND EXISTS (SELECT 1 FROM loyalty.segment) THEN
			RAISE EXCEPTION 'segment rule names unknown segment "%"', NEW.segment
				USING ERRCODE = 'foreign_key_violation',
					  DETAIL = format('No segment is named %L; segments are listed in loyalty.segment.', NEW.segment),
					  HINT = 'Insert the segment into loyalty.segment first.';
		END IF;
	END IF;
	RETURN NEW;
END;
$$;

COMMENT ON FUNCTION loyalty._segment_map_row() IS
	'Internal: keep the builtin flag of the segment map right, let a restored map replace the default one (tables loaded in either order), and refuse a rule naming an unknown segment';

CREATE OR REPLACE FUNCTION loyalty._segment_map_take_over()
RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF TG_OP = 'DELETE' AND OLD.builtin AND pg_catalog.pg_trigger_depth() > 1
	   AND NOT EXISTS (SELECT 1 FROM loyalty.segment s WHERE s.builtin AND TG_TABLE_NAME = 'segment')
	   AND NOT EXISTS (SELECT 1 FROM loyalty.segment_rule r WHERE r.builtin AND TG_TABLE_NAME = 'segment_rule') THEN
		RETURN NULL;
	END IF;
	IF EXISTS (SELECT 1 FROM loyalty.segment_rule WHERE builtin) THEN
		UPDATE loyalty.segment_rule SET builtin = false WHERE builtin;
	END IF;
	IF EXISTS (SELECT 1 FROM loyalty.segment WHERE builtin) THEN
		UPDATE loyalty.segment SET builtin = false WHERE builtin;
	END IF;
	RETURN NULL;
END;
$$;

CREATE FUNCTION loyalty._segment_in_use()
RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint;
BEGIN
	IF TG_OP = 'UPDATE' THEN
		UPDATE loyalty.segment_rule r SET segment = NEW.name
		WHERE r.segment OPERATOR(pg_catalog.=) OLD.name;
		RETURN NULL;
	END IF;
	IF pg_catalog.pg_trigger_depth() > 1 THEN
		RETURN NULL;
	END IF;
	SELECT count(*) INTO n FROM loyalty.segment_rule r WHERE r.segment OPERATOR(pg_catalog.=) OLD.name;
	IF n > 0 THEN
		RAISE EXCEPTION 'cannot delete segment "%": % segment rule(s) map scores to it', OLD.name, n
			USING ERRCODE = 'foreign_key_violation',
				  DETAIL = format('loyalty.segment_rule has %s rule(s) for segment %L.', n, OLD.name),
				  HINT = 'Delete or change its rules first, in the same transaction.';
	END IF;
	RETURN NULL;
END;
$$;

COMMENT ON FUNCTION loyalty._segment_in_use() IS
	'Internal: carry a segment rename to its rules; refuse deleting a segment that rules use (23503)';

CREATE TRIGGER segment_in_use
	AFTER UPDATE OF name OR DELETE ON loyalty.segment
	FOR EACH ROW EXECUTE FUNCTION loyalty._segment_in_use();
COMMENT ON TRIGGER segment_in_use ON loyalty.segment IS
	'A renamed segment is renamed in its rules; deleting a segment that rules use is refused (23503)';

CREATE OR REPLACE FUNCTION loyalty.reset_segment_map()
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET session_replication_role = replica
AS $$
DECLARE
	-- the default segments, in display order
	names text[] := ARRAY['Champions', 'Loyal', 'Potential Loyalist', 'New', 'Promising',
						  'Need Attention', 'About to Sleep', 'At Risk', 'Cannot Lose Them',
						  'Hibernating', 'Lost'];
	descs text[] := ARRAY[
		'Bought recently and buy often: reward them, they become advocates and early adopters',
		'Buy often and fairly recently: upsell, ask for reviews, offer the loyalty programme',
		'Recent customers with a few orders: offer membership and recommendations',
		'First orders very recently: onboard them and build the relationship early',
		'Recent buyers with a single order or few: build awareness, offer a second purchase',
		'Middling recency and frequency: limited-time offers based on past purchases',
		'Fading recency and few orders: reactivate with popular products and discounts',
		'Used to buy fairly often but not for a long time: personalised win-back offers',
		'Were the most frequent buyers but have not returned for long: win them back now',
		'Long since the last order and few orders: low-cost generic offers',
		'Longest since the last order and fewest orders: last revival campaign or let go'];
BEGIN
	LOCK TABLE loyalty.segment_rule IN SHARE ROW EXCLUSIVE MODE;
	DELETE FROM loyalty.segment_rule;
	DELETE FROM loyalty.segment s WHERE NOT (s.name OPERATOR(pg_catalog.=) ANY (names));
	-- the kept segments take their default place, one at a time (display
	-- orders are unique): whoever holds the place moves past the end first
	FOR i IN 1 .. pg_catalog.array_length(names, 1) LOOP
		IF EXISTS (SELECT 1 FROM loyalty.segment s WHERE s.name OPERATOR(pg_catalog.=) names[i]) THEN
			UPDATE loyalty.segment s
			SET display_order = (SELECT max(t.display_order) OPERATOR(pg_catalog.+) 1 FROM loyalty.segment t)
			WHERE s.display_order OPERATOR(pg_catalog.=) i
			  AND s.name OPERATOR(pg_catalog.<>) names[i];
			UPDATE loyalty.segment s
			SET display_order = i, description = descs[i], builtin = true
			WHERE s.name OPERATOR(pg_catalog.=) names[i];
		END IF;
	END LOOP;
	INSERT INTO loyalty.segment (name, display_order, description, builtin)
	SELECT names[i], i, descs[i], true
	FROM pg_catalog.generate_series(1, pg_catalog.array_length(names, 1)) AS i
	WHERE NOT EXISTS (SELECT 1 FROM loyalty.segment s WHERE s.name OPERATOR(pg_catalog.=) names[i]);

	INSERT INTO loyalty.segment_rule (segment, r_min, r_max, f_min, f_max, m_min, m_max, builtin) VALUES
		('Champions',          4, 5, 5, 5, 1, 5, true),
		('Champions',          5, 5, 4, 4, 1, 5, true),
		('Loyal',              3, 3, 4, 5, 1, 5, true),
		('Loyal',              4, 4, 4, 4, 1, 5, true),
		('Potential Loyalist', 4, 5, 2, 3, 1, 5, true),
		('New',                5, 5, 1, 1, 1, 5, true),
		('Promising',          4, 4, 1, 1, 1, 5, true),
		('Need Attention',     3, 3, 3, 3, 1, 5, true),
		('About to Sleep',     3, 3, 1, 2, 1, 5, true),
		('At Risk',            1, 2, 3, 4, 1, 5, true),
		('Cannot Lose Them',   1, 2, 5, 5, 1, 5, true),
		('Hibernating',        2, 2, 1, 2, 1, 5, true),
		('Lost',               1, 1, 1, 2, 1, 5, true);
END;
$$;

ALTER TABLE loyalty.segment ENABLE ALWAYS TRIGGER segment_campaign_rule_delete;

-- campaign rules
ALTER TABLE loyalty.campaign_rule DROP CONSTRAINT campaign_rule_campaign_id_fkey;
ALTER TABLE loyalty.campaign_rule DROP CONSTRAINT campaign_rule_kind_fkey;

CREATE FUNCTION loyalty._campaign_rule_parent_in_use()
RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	used record;
BEGIN
	IF TG_TABLE_NAME = 'campaign' THEN
		IF TG_OP = 'UPDATE' AND NEW.campaign_id OPERATOR(pg_catalog.=) OLD.campaign_id THEN
			RETURN NULL;
		END IF;
		SELECT r.rule_id, r.kind INTO used FROM loyalty.campaign_rule r
		WHERE r.campaign_id OPERATOR(pg_catalog.=) OLD.campaign_id ORDER BY r.rule_id LIMIT 1;
		IF FOUND THEN
			RAISE EXCEPTION 'campaign % has eligibility rules', OLD.campaign_id
				USING ERRCODE = 'foreign_key_violation',
					  DETAIL = format('Rule %s (kind %L) belongs to campaign %L (id %s).',
									  used.rule_id, used.kind, OLD.name, OLD.campaign_id),
					  HINT = 'Drop its rules with loyalty.drop_campaign_rule() first.';
		END IF;
		RETURN NULL;
	END IF;
	IF TG_OP = 'UPDATE' AND NEW.kind OPERATOR(pg_catalog.=) OLD.kind THEN
		RETURN NULL;
	END IF;
	SELECT r.rule_id, r.campaign_id INTO used FROM loyalty.campaign_rule r
	WHERE r.kind OPERATOR(pg_catalog.=) OLD.kind ORDER BY r.rule_id LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'eligibility rule kind "%" is used by campaign rules', OLD.kind
			USING ERRCODE = 'foreign_key_violation',
				  DETAIL = format('Rule %s of campaign %s is of kind %L.', used.rule_id, used.campaign_id, OLD.kind),
				  HINT = 'Drop the rules of this kind with loyalty.drop_campaign_rule() first.';
	END IF;
	RETURN NULL;
END;
$$;

COMMENT ON FUNCTION loyalty._campaign_rule_parent_in_use() IS
	'Internal trigger on loyalty.campaign and loyalty.eligibility_kind: refuse deleting a campaign or kind that campaign rules use, or renaming such a kind (23503)';

CREATE TRIGGER campaign_rule_parent
	AFTER UPDATE OF campaign_id OR DELETE ON loyalty.campaign
	FOR EACH ROW EXECUTE FUNCTION loyalty._campaign_rule_parent_in_use();
CREATE TRIGGER eligibility_kind_in_use
	AFTER UPDATE OF kind OR DELETE ON loyalty.eligibility_kind
	FOR EACH ROW EXECUTE FUNCTION loyalty._campaign_rule_parent_in_use();

COMMENT ON TRIGGER campaign_rule_parent ON loyalty.campaign IS
	'Refuse deleting a campaign that has eligibility rules (23503)';
COMMENT ON TRIGGER eligibility_kind_in_use ON loyalty.eligibility_kind IS
	'Refuse deleting or renaming an eligibility rule kind that campaign rules use (23503)';

CREATE OR REPLACE FUNCTION loyalty.add_campaign_rule(campaign_id bigint, kind text, params jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	id bigint;
	unknown text;
BEGIN
	IF campaign_id IS NULL OR kind IS NULL OR params IS NULL THEN
		RAISE EXCEPTION 'campaign_id, kind and params must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	-- locked as a foreign key would: the kind cannot go while the rule is added
	PERFORM 1 FROM loyalty.eligibility_kind k WHERE k.kind = add_campaign_rule.kind FOR KEY SHARE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'unknown eligibility rule kind: "%"', kind
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Kinds are listed in loyalty.eligibility_kind.';
	END IF;
	IF jsonb_typeof(params) <> 'object' THEN
		RAISE EXCEPTION 'rule params must be a JSON object'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF kind = 'segment' AND NOT (
		jsonb_typeof(params -> 'segments') = 'array'
		AND jsonb_array_length(params -> 'segments') > 0
		AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(params -> 'segments') e
						WHERE jsonb_typeof(e) <> 'string')) THEN
		RAISE EXCEPTION 'a segment rule needs {"segments": [names]}'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF kind = 'new_customer' AND (
		EXISTS (SELECT 1 FROM jsonb_object_keys(params) k WHERE k <> 'new')
		OR coalesce(jsonb_typeof(params -> 'new'), 'boolean') <> 'boolean') THEN
		RAISE EXCEPTION 'a new_customer rule takes {"new": true} or {"new": false}'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	-- names must exist now: a rule naming nothing would refuse every customer
	IF kind = 'segment' THEN
		SELECT e INTO unknown FROM jsonb_array_elements_text(params -> 'segments') AS e
		WHERE NOT EXISTS (SELECT 1 FROM loyalty.segment s WHERE s.name OPERATOR(pg_catalog.=) e)
		LIMIT 1;
		IF FOUND THEN
			RAISE EXCEPTION 'unknown segment "%" in segment rule', unknown
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = format('No segment is named %L; segments are listed in loyalty.segment.', unknown);
		END IF;
	ELSIF kind = 'tier' THEN
		SELECT e INTO unknown
		FROM (SELECT params ->> 'min_tier' AS e
			  UNION ALL
			  SELECT jsonb_array_elements_text(params -> 'tiers')
			  WHERE jsonb_typeof(params -> 'tiers') = 'array') AS n
		WHERE n.e IS NOT NULL
		  AND NOT EXISTS (SELECT 1 FROM loyalty.tier t WHERE t.name OPERATOR(pg_catalog.=) n.e)
		LIMIT 1;
		IF FOUND THEN
			RAISE EXCEPTION 'unknown tier "%" in tier rule', unknown
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = format('No tier is named %L; tiers are listed in loyalty.tier.', unknown);
		END IF;
	END IF;

	PERFORM loyalty._campaign_gate(add_campaign_rule.campaign_id);
	PERFORM 1 FROM loyalty.campaign t WHERE t.campaign_id = add_campaign_rule.campaign_id FOR KEY SHARE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'campaign % does not exist', add_campaign_rule.campaign_id
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	INSERT INTO loyalty.campaign_rule AS r (campaign_id, kind, params)
	VALUES (add_campaign_rule.campaign_id, add_campaign_rule.kind, add_campaign_rule.params)
	RETURNING r.rule_id INTO id;
	UPDATE loyalty.campaign t SET updated_at = now()
	WHERE t.campaign_id = add_campaign_rule.campaign_id;
	RETURN id;
END;
$$;

-- codes sold for points hold their cap unit
ALTER TABLE loyalty.coupon ADD COLUMN holds_cap_unit boolean NOT NULL DEFAULT false;
UPDATE loyalty.coupon c SET holds_cap_unit = true
WHERE EXISTS (SELECT 1 FROM loyalty.points_exchange e WHERE e.coupon_id = c.coupon_id);
COMMENT ON COLUMN loyalty.coupon.holds_cap_unit IS
	'The code was sold for points (exchange_points): while neither used nor voided it holds one unit of its campaign''s total and per-customer caps, which no other code can take';

CREATE INDEX coupon_cap_unit_idx ON loyalty.coupon (campaign_id, customer_id)
	WHERE holds_cap_unit;

COMMENT ON INDEX loyalty.coupon_cap_unit_idx IS
	'Codes sold for points, by campaign and customer: counted by every cap check of a capped campaign';

CREATE FUNCTION loyalty._coupon_cap_units(campaign_id bigint, customer_id text, at timestamptz)
RETURNS bigint
AS 'MODULE_PATHNAME', 'coupon_cap_units'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION loyalty._coupon_cap_units(bigint, text, timestamptz) IS
	'Internal: units of a campaign''s total cap (customer NULL) or of a customer''s per-customer cap in use (redemptions, live reservations, unused codes sold for points), newest snapshot, under the customer lock when a customer is given';

CREATE OR REPLACE FUNCTION loyalty.exchange_points(customer_id text, campaign_id bigint, reference text,
										at timestamptz DEFAULT pg_catalog.now(),
										OUT code text, OUT points bigint, OUT available bigint)
RETURNS record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	p_customer text := customer_id;
	p_campaign bigint := campaign_id;
	p_reference text := reference;
	reward record;
	camp record;
	ex record;
	spent record;
	issued record;
	before bigint[];
	in_use bigint;
BEGIN
	IF p_customer IS NULL OR p_campaign IS NULL OR p_reference IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, campaign_id, reference and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, p_customer);
	PERFORM loyalty._points_check_key('reference'::text, p_reference);

	-- a repeat returns the first exchange
	SELECT * INTO ex FROM loyalty.points_exchange e WHERE e.reference = p_reference;
	IF FOUND THEN
		IF ex.customer_id <> p_customer OR ex.campaign_id <> p_campaign THEN
			RAISE EXCEPTION 'reference "%" was already used for a different exchange', p_reference
				USING ERRCODE = 'LP002';
		END IF;
		code := ex.code; points := ex.points; available := ex.available_after;
		RETURN;
	END IF;

	SELECT * INTO reward FROM loyalty.points_reward r WHERE r.campaign_id = p_campaign AND r.active;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'campaign % is not offered for points', p_campaign
			USING ERRCODE = 'LP007',
				  HINT = 'Offer it with a row in loyalty.points_reward.';
	END IF;
	SELECT c.paused, c.starts_at, c.ends_at, c.total_cap, c.per_customer_cap INTO camp
	FROM loyalty.campaign c WHERE c.campaign_id = p_campaign;
	IF NOT FOUND OR camp.paused OR camp.ends_at <= at THEN
		RAISE EXCEPTION 'campaign % cannot be exchanged for points now', p_campaign
			USING ERRCODE = 'LP008',
				  DETAIL = CASE WHEN NOT FOUND THEN 'The campaign does not exist.'
								WHEN camp.paused THEN 'The campaign is paused.'
								ELSE 'The campaign has ended.' END;
	END IF;

	IF camp.total_cap IS NOT NULL OR camp.per_customer_cap IS NOT NULL THEN
		UPDATE loyalty.points_reward r SET points = r.points WHERE r.campaign_id = p_campaign;
		IF camp.total_cap IS NOT NULL THEN
			SELECT c.total_cap INTO camp.total_cap
			FROM loyalty.campaign c WHERE c.campaign_id = p_campaign FOR NO KEY UPDATE;
			in_use := loyalty._coupon_cap_units(p_campaign, NULL, at);
			IF in_use >= camp.total_cap THEN
				RAISE EXCEPTION 'campaign % has no coupon left to exchange', p_campaign
					USING ERRCODE = 'LP009',
						  DETAIL = format('Its total cap of %s is reached (%s in use, reserved or sold for points).',
										  camp.total_cap, in_use),
						  HINT = 'No points were spent.';
			END IF;
		END IF;
		IF camp.per_customer_cap IS NOT NULL THEN
			in_use := loyalty._coupon_cap_units(p_campaign, p_customer, at);
			IF in_use >= camp.per_customer_cap THEN
				RAISE EXCEPTION 'customer "%" cannot get another coupon of campaign %', p_customer, p_campaign
					USING ERRCODE = 'LP009',
						  DETAIL = format('The per-customer cap of %s is reached (%s in use, reserved or sold for points).',
										  camp.per_customer_cap, in_use),
						  HINT = 'No points were spent.';
			END IF;
		END IF;
	END IF;

	SELECT s.* INTO spent FROM loyalty.spend_points(p_customer, reward.points, 'exchange:' || p_reference, at) s;
	-- a concurrent first call with this reference committed while the spend waited
	SELECT * INTO ex FROM loyalty.points_exchange e WHERE e.reference = p_reference;
	IF FOUND THEN
		IF ex.customer_id <> p_customer OR ex.campaign_id <> p_campaign THEN
			RAISE EXCEPTION 'reference "%" was already used for a different exchange', p_reference
				USING ERRCODE = 'LP002';
		END IF;
		code := ex.code; points := ex.points; available := ex.available_after;
		RETURN;
	END IF;
	IF (SELECT e.created_at FROM loyalty.points_ledger e WHERE e.entry_id = spent.entry_id) <> now() THEN
		RAISE EXCEPTION 'reference "exchange:%" was already used by a spend that is not an exchange', p_reference
			USING ERRCODE = 'LP002';
	END IF;

	before := ARRAY(SELECT c.coupon_id FROM loyalty.coupon c
					WHERE c.campaign_id = p_campaign AND c.customer_id = p_customer);
	PERFORM loyalty.generate_codes(p_campaign, 1, reward.code_pattern, ARRAY[p_customer]);
	SELECT c.coupon_id, c.code::text AS code INTO STRICT issued
	FROM loyalty.coupon c
	WHERE c.campaign_id = p_campaign AND c.customer_id = p_customer
	  AND c.coupon_id <> ALL (before) AND loyalty._points_inserted_here(c.xmin);
	-- the code holds the cap unit it was sold for until used or voided
	UPDATE loyalty.coupon c SET holds_cap_unit = true WHERE c.coupon_id = issued.coupon_id;

	INSERT INTO loyalty.points_exchange (reference, customer_id, campaign_id, points, coupon_id, code,
										 entry_id, available_after, effective_at)
	VALUES (p_reference, p_customer, p_campaign, reward.points, issued.coupon_id, issued.code,
			spent.entry_id, spent.available, at);
	code := issued.code; points := reward.points; available := spent.available;
END;
$$;

COMMENT ON FUNCTION loyalty.exchange_points(text, bigint, text, timestamptz) IS
	'Spend the points a campaign''s coupon costs (loyalty.points_reward) and issue a single-use code bound to the customer; idempotent on reference; LP001 short, LP007 not offered, LP008 campaign paused or ended, LP009 cap reached (nothing spent)';

-- configuration references in the integrity check
CREATE OR REPLACE FUNCTION loyalty.check_integrity()
RETURNS TABLE (problem text, customer_id text, detail text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	WITH lot_sums AS (
		SELECT l.customer_id,
			   coalesce(sum(l.remaining) FILTER (WHERE l.state = 'available'), 0) AS available,
			   coalesce(sum(l.remaining) FILTER (WHERE l.state = 'pending'), 0) AS pending,
			   min(LEAST(CASE WHEN l.state = 'pending' THEN l.available_at END, l.expires_at))
				   FILTER (WHERE l.state <> 'closed') AS next_event
		FROM loyalty.points_lot l GROUP BY l.customer_id
	), ledger_sums AS (
		SELECT e.customer_id, sum(e.points) AS points, sum(e.debt_change) AS debt,
			   sum(e.qualifying) AS qualifying, coalesce(sum(e.amount), 0) AS spend,
			   coalesce(sum(e.points) FILTER (WHERE e.kind = 'earn'), 0) AS earned
		FROM loyalty.points_ledger e GROUP BY e.customer_id
	), reversed_earnings AS (
		SELECT e.customer_id, sum(e.points) AS points
		FROM loyalty.points_ledger e
		WHERE e.kind = 'earn'
		  AND e.entry_id IN (SELECT unnest(r.reverses) FROM loyalty.points_ledger r WHERE r.kind = 'reverse')
		GROUP BY e.customer_id
	), moves AS (
		SELECT m.lot_id, sum(m.delta) AS delta,
			   sum(-m.delta) FILTER (WHERE m.kind = 'expire') AS expired
		FROM (SELECT e.kind, u.lot_id, u.delta
			  FROM loyalty.points_ledger e, unnest(e.lot_ids, e.lot_points) AS u(lot_id, delta)) m
		GROUP BY m.lot_id
	), buckets AS (
		SELECT q.customer_id, sum(q.points) AS points, sum(q.spend) AS spend
		FROM loyalty.points_qualifying q GROUP BY q.customer_id
	), last_tier AS (
		SELECT DISTINCT ON (h.customer_id) h.customer_id, h.to_tier
		FROM loyalty.tier_history h ORDER BY h.customer_id, h.history_id DESC
	)
	SELECT 'negative balance', a.customer_id,
		   format('available %s, pending %s, debt %s', a.available, a.pending, a.debt)
	FROM loyalty.points_account a
	WHERE a.available < 0 OR a.pending < 0 OR a.debt < 0
	UNION ALL
	SELECT 'balance differs from open lots', a.customer_id,
		   format('account available %s / pending %s, lots %s / %s',
				  a.available, a.pending, coalesce(s.available, 0), coalesce(s.pending, 0))
	FROM loyalty.points_account a LEFT JOIN lot_sums s ON s.customer_id = a.customer_id
	WHERE a.available <> coalesce(s.available, 0) OR a.pending <> coalesce(s.pending, 0)
	UNION ALL
	SELECT 'balance differs from ledger', a.customer_id,
		   format('available + pending - debt = %s, ledger sum %s',
				  a.available + a.pending - a.debt, coalesce(g.points, 0))
	FROM loyalty.points_account a LEFT JOIN ledger_sums g ON g.customer_id = a.customer_id
	WHERE a.available + a.pending - a.debt <> coalesce(g.points, 0)
	UNION ALL
	SELECT 'debt differs from ledger', a.customer_id,
		   format('debt %s, ledger debt changes %s', a.debt, coalesce(g.debt, 0))
	FROM loyalty.points_account a LEFT JOIN ledger_sums g ON g.customer_id = a.customer_id
	WHERE a.debt <> coalesce(g.debt, 0)
	UNION ALL
	SELECT 'debt with open lots', a.customer_id,
		   format('debt %s while %s points are open', a.debt, a.available + a.pending)
	FROM loyalty.points_account a
	WHERE a.debt > 0 AND (a.available > 0 OR a.pending > 0
						  OR EXISTS (SELECT 1 FROM loyalty.points_lot l
									 WHERE l.customer_id = a.customer_id AND l.state <> 'closed'))
	UNION ALL
	SELECT 'totals differ from ledger', a.customer_id,
		   format('lifetime %s / qualifying %s / spend %s, ledger %s / %s / %s',
				  a.lifetime_earned, a.qualifying, a.qualifying_spend,
				  coalesce(g.earned, 0) - coalesce(r.points, 0), coalesce(g.qualifying, 0), coalesce(g.spend, 0))
	FROM loyalty.points_account a
	LEFT JOIN ledger_sums g ON g.customer_id = a.customer_id
	LEFT JOIN reversed_earnings r ON r.customer_id = a.customer_id
	WHERE a.lifetime_earned <> coalesce(g.earned, 0) - coalesce(r.points, 0)
	   OR a.qualifying <> coalesce(g.qualifying, 0)
	   OR a.qualifying_spend <> coalesce(g.spend, 0)
	UNION ALL
	SELECT 'qualifying buckets differ from account', a.customer_id,
		   format('account %s / %s, monthly buckets %s / %s',
				  a.qualifying, a.qualifying_spend, coalesce(b.points, 0), coalesce(b.spend, 0))
	FROM loyalty.points_account a LEFT JOIN buckets b ON b.customer_id = a.customer_id
	WHERE a.qualifying <> coalesce(b.points, 0) OR a.qualifying_spend <> coalesce(b.spend, 0)
	UNION ALL
	SELECT 'settling hint too late', a.customer_id,
		   format('next_event_at %s, first lot event %s', a.next_event_at, s.next_event)
	FROM loyalty.points_account a JOIN lot_sums s ON s.customer_id = a.customer_id
	WHERE s.next_event IS NOT NULL AND (a.next_event_at IS NULL OR a.next_event_at > s.next_event)
	UNION ALL
	SELECT 'lot differs from ledger', l.customer_id,
		   format('lot %s: remaining %s, expired %s; ledger changes %s, expiries %s',
				  l.lot_id, l.remaining, l.expired, coalesce(m.delta, 0), coalesce(m.expired, 0))
	FROM loyalty.points_lot l LEFT JOIN moves m ON m.lot_id = l.lot_id
	WHERE l.remaining <> coalesce(m.delta, 0) OR l.expired <> coalesce(m.expired, 0)
	   OR l.remaining + l.expired > l.points
	UNION ALL
	SELECT 'malformed lot', l.customer_id, format('lot %s (%s, %s of %s points)', l.lot_id, l.state, l.remaining, l.points)
	FROM loyalty.points_lot l
	WHERE l.state NOT IN ('pending', 'available', 'closed') OR l.points <= 0 OR l.expired < 0
	   OR (l.state = 'closed') <> (l.remaining = 0)
	   OR (l.state = 'pending' AND l.available_at IS NULL)
	   OR l.available_at >= l.expires_at
	UNION ALL
	SELECT 'malformed ledger entry', e.customer_id, format('entry %s (%s)', e.entry_id, e.kind)
	FROM loyalty.points_ledger e
	WHERE e.kind NOT IN ('earn', 'spend', 'expire', 'reverse', 'adjust')
	   OR (e.reference IS NULL) <> (e.kind = 'expire')
	   OR coalesce(cardinality(e.lot_ids) <> cardinality(e.lot_points),
				   (e.lot_ids IS NULL) <> (e.lot_points IS NULL))
	UNION ALL
	SELECT 'ledger entry inconsistent', e.customer_id,
		   format('entry %s: points %s, lot changes %s, debt change %s',
				  e.entry_id, e.points, coalesce(x.total, 0), e.debt_change)
	FROM loyalty.points_ledger e
	CROSS JOIN LATERAL (SELECT sum(u) AS total FROM unnest(e.lot_points) u) x
	WHERE e.points <> coalesce(x.total, 0) - e.debt_change
	UNION ALL
	SELECT 'lot or entry without account', o.customer_id, o.what
	FROM (SELECT l.customer_id, format('lot %s', l.lot_id) AS what FROM loyalty.points_lot l
		  UNION ALL
		  SELECT e.customer_id, format('entry %s', e.entry_id) FROM loyalty.points_ledger e) o
	WHERE NOT EXISTS (SELECT 1 FROM loyalty.points_account a WHERE a.customer_id = o.customer_id)
	UNION ALL
	SELECT 'lot of another customer', e.customer_id,
		   format('entry %s changes lot %s of customer %s', e.entry_id, l.lot_id, l.customer_id)
	FROM loyalty.points_ledger e
	CROSS JOIN LATERAL unnest(e.lot_ids) AS u(lot_id)
	JOIN loyalty.points_lot l ON l.lot_id = u.lot_id
	WHERE l.customer_id <> e.customer_id
	UNION ALL
	SELECT 'duplicate reference', min(e.customer_id),
		   format('reference %s: %s entries of kind %s', e.reference, count(*), e.kind)
	FROM loyalty.points_ledger e WHERE e.reference IS NOT NULL
	GROUP BY e.reference, e.kind HAVING count(*) > 1
	UNION ALL
	SELECT 'reference of several customers', min(e.customer_id),
		   format('reference %s used by %s customers', e.reference, count(DISTINCT e.customer_id))
	FROM loyalty.points_ledger e WHERE e.reference IS NOT NULL AND e.kind <> 'adjust'
	GROUP BY e.reference HAVING count(DISTINCT e.customer_id) > 1
	UNION ALL
	SELECT 'reference not owned by the customer', e.customer_id,
		   format('entry %s: reference %s, owner %s', e.entry_id, e.reference, coalesce(o.customer_id, 'none'))
	FROM loyalty.points_ledger e
	LEFT JOIN loyalty.points_reference o ON o.reference = e.reference
	WHERE e.reference IS NOT NULL AND o.customer_id IS DISTINCT FROM e.customer_id
	UNION ALL
	SELECT 'unknown tier', a.customer_id, format('tier %s is not in loyalty.tier', a.tier)
	FROM loyalty.points_account a
	WHERE a.tier IS NOT NULL AND NOT EXISTS (SELECT 1 FROM loyalty.tier t WHERE t.name = a.tier)
	UNION ALL
	SELECT 'tier differs from history', a.customer_id,
		   format('tier %s, last change to %s', a.tier, h.to_tier)
	FROM loyalty.points_account a JOIN last_tier h ON h.customer_id = a.customer_id
	WHERE a.tier IS DISTINCT FROM h.to_tier
	-- references between configuration tables kept without foreign keys
	-- (so that pg_restore --jobs can load them in any order)
	UNION ALL
	SELECT 'segment rule of unknown segment', NULL::text,
		   format('rule R%s-%s F%s-%s M%s-%s names segment %s', r.r_min, r.r_max, r.f_min, r.f_max,
				  r.m_min, r.m_max, r.segment)
	FROM loyalty.segment_rule r
	WHERE NOT EXISTS (SELECT 1 FROM loyalty.segment s WHERE s.name = r.segment)
	UNION ALL
	SELECT 'campaign rule of unknown campaign', NULL::text,
		   format('rule %s names campaign %s', r.rule_id, r.campaign_id)
	FROM loyalty.campaign_rule r
	WHERE NOT EXISTS (SELECT 1 FROM loyalty.campaign c WHERE c.campaign_id = r.campaign_id)
	UNION ALL
	SELECT 'campaign rule of unknown kind', NULL::text,
		   format('rule %s of campaign %s is of kind %s', r.rule_id, r.campaign_id, r.kind)
	FROM loyalty.campaign_rule r
	WHERE NOT EXISTS (SELECT 1 FROM loyalty.eligibility_kind k WHERE k.kind = r.kind)
	ORDER BY 1, 2, 3
$$;

COMMENT ON FUNCTION loyalty.check_integrity() IS
	'Every violation of the points invariants (balance = open lots = ledger sum, no negative balance, debt, well-formed lots and entries, references and their one owner, totals, tiers and that they exist) and every dangling reference between configuration tables (segment rules, campaign rules); empty when healthy';

/* ---------------------------------------------------------------------------
 * Issue 13, common: loyalty.settings holds the one program time zone every
 * family reads (common/settings.sql).  A 0.2.0 program that set
 * points_program.timezone keeps its zone: it becomes the program's.
 * ------------------------------------------------------------------------ */
CREATE TABLE loyalty.settings (
	singleton	boolean PRIMARY KEY DEFAULT true CHECK (singleton),
	-- an unknown zone raises here
	timezone	text NOT NULL DEFAULT 'UTC'
		CONSTRAINT settings_timezone_check
		CHECK (pg_catalog.timezone(timezone, '2000-01-01 00:00:00+00'::pg_catalog.timestamptz) IS NOT NULL)
);

COMMENT ON TABLE loyalty.settings IS
	'Program-wide settings, at most one row (no row: the defaults). Change them with INSERT ... ON CONFLICT (singleton) DO UPDATE';
COMMENT ON COLUMN loyalty.settings.singleton IS
	'Always true: the table holds at most one row';
COMMENT ON COLUMN loyalty.settings.timezone IS
	'The program time zone (default UTC): RFM days, the default as_of of refresh_segments, date-only campaign ends and the points calendar are computed in it';

SELECT pg_catalog.pg_extension_config_dump('loyalty.settings'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.settings'::pg_catalog.regclass, 'SELECT, INSERT, UPDATE, DELETE'::pg_catalog.text);
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.settings'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

INSERT INTO loyalty.settings (singleton, timezone)
SELECT true, p.timezone FROM loyalty.points_program p WHERE p.timezone OPERATOR(pg_catalog.<>) 'UTC'::pg_catalog.text;

-- Issue 13, BI (items 12 and 13): analyst views that work with any
-- search_path, a customer profile, a segment history, a gap-free segment
-- trend, and a comment on every view column.
--
-- customer_segment and segment_map change the type of their score column
-- (loyalty.rfm_score -> text, '543'; the typed score is the new column
-- rfm_score) and segment_trend gains rows and columns, so the three are
-- dropped and created again as in a fresh install (a user view built on
-- one of them makes the update fail with 2BP01: drop it first, recreate it
-- after; CHANGELOG).  Their access rules are kept (same names); the grants
-- are re-applied at the end of this script.  The other views keep their
-- definitions and only get column comments.
DROP VIEW loyalty.customer_segment;
DROP VIEW loyalty.segment_map;
DROP VIEW loyalty.segment_trend;

CREATE VIEW loyalty.segment_map AS
SELECT (r.r * 100 + f.f * 10 + m.m)::text AS score,
	   r.r AS recency, f.f AS frequency, m.m AS monetary,
	   sr.segment, s.display_order,
	   r.r, f.f, m.m,
	   loyalty.rfm_score(r.r, f.f, m.m) AS rfm_score
FROM pg_catalog.generate_series(1, 5) AS r(r)
CROSS JOIN pg_catalog.generate_series(1, 5) AS f(f)
CROSS JOIN pg_catalog.generate_series(1, 5) AS m(m)
LEFT JOIN loyalty.segment_rule sr
	   ON r.r BETWEEN sr.r_min AND sr.r_max
	  AND f.f BETWEEN sr.f_min AND sr.f_max
	  AND m.m BETWEEN sr.m_min AND sr.m_max
LEFT JOIN loyalty.segment s ON s.name = sr.segment;

COMMENT ON VIEW loyalty.segment_map IS
	'The segment of each of the 125 scores 111..555 (for BI tools and documentation)';
COMMENT ON COLUMN loyalty.segment_map.score IS
	'The score as text, three digits (''543''): join and filter on it with any search_path';
COMMENT ON COLUMN loyalty.segment_map.recency IS
	'Recency score 1..5 (same as r; the 0.2.0 name)';
COMMENT ON COLUMN loyalty.segment_map.frequency IS
	'Frequency score 1..5 (same as f; the 0.2.0 name)';
COMMENT ON COLUMN loyalty.segment_map.monetary IS
	'Monetary score 1..5 (same as m; the 0.2.0 name)';
COMMENT ON COLUMN loyalty.segment_map.segment IS
	'Segment of the score in the current map (NULL only while the map is being edited)';
COMMENT ON COLUMN loyalty.segment_map.display_order IS
	'Display order of the segment in reports (1 first)';
COMMENT ON COLUMN loyalty.segment_map.r IS 'Recency score 1..5 (5 = most recent)';
COMMENT ON COLUMN loyalty.segment_map.f IS 'Frequency score 1..5 (5 = most orders)';
COMMENT ON COLUMN loyalty.segment_map.m IS 'Monetary score 1..5 (5 = highest spend)';
COMMENT ON COLUMN loyalty.segment_map.rfm_score IS
	'The score as loyalty.rfm_score (its operators need schema loyalty on the search_path, or OPERATOR(loyalty.=))';

CREATE VIEW loyalty.customer_segment AS
SELECT s.customer_id, s.score::text AS score, s.segment, s.since,
	   (SELECT p.taken_at FROM loyalty.segment_snapshot p
		ORDER BY p.snapshot_id DESC LIMIT 1) AS refreshed_at,
	   loyalty.recency(s.score) AS r,
	   loyalty.frequency(s.score) AS f,
	   loyalty.monetary(s.score) AS m,
	   s.score AS rfm_score
FROM loyalty.customer_stats s
WHERE s.score IS NOT NULL;

COMMENT ON VIEW loyalty.customer_segment IS
	'Every scored customer''s score and segment at the last refresh, and since when they are in it';
COMMENT ON COLUMN loyalty.customer_segment.customer_id IS
	'Customer key as tracked (text, collation "C"); a bigint shop key joins as o.customer_id::text = customer_id';
COMMENT ON COLUMN loyalty.customer_segment.score IS
	'RFM score at the last refresh as text, three digits (''543''): join and filter on it with any search_path';
COMMENT ON COLUMN loyalty.customer_segment.segment IS 'Segment at the last refresh';
COMMENT ON COLUMN loyalty.customer_segment.since IS
	'as_of of the refresh that put the customer into this segment';
COMMENT ON COLUMN loyalty.customer_segment.refreshed_at IS
	'When the last refresh_segments ran (taken_at of the last snapshot)';
COMMENT ON COLUMN loyalty.customer_segment.r IS 'Recency score (first digit of score; 5 = most recent on the default scale)';
COMMENT ON COLUMN loyalty.customer_segment.f IS 'Frequency score (second digit of score)';
COMMENT ON COLUMN loyalty.customer_segment.m IS 'Monetary score (third digit of score)';
COMMENT ON COLUMN loyalty.customer_segment.rfm_score IS
	'The score as loyalty.rfm_score (its operators need schema loyalty on the search_path, or OPERATOR(loyalty.=))';

CREATE VIEW loyalty.segment_trend AS
WITH snap AS (
	SELECT p.snapshot_id, p.as_of, p.customers,
		   (p.as_of AT TIME ZONE z.tz)::date AS day
	FROM loyalty.segment_snapshot p
	CROSS JOIN (SELECT coalesce((SELECT st.timezone FROM loyalty.settings st), 'UTC') AS tz) z
), ranked AS (
	SELECT snap.snapshot_id, snap.as_of, snap.customers, snap.day,
		   date_trunc('month', snap.day::timestamp)::date AS month,
		   row_number() OVER (PARTITION BY snap.day
							  ORDER BY snap.as_of DESC, snap.snapshot_id DESC) = 1 AS last_of_day,
		   row_number() OVER (PARTITION BY date_trunc('month', snap.day::timestamp)
							  ORDER BY snap.as_of DESC, snap.snapshot_id DESC) = 1 AS last_of_month
	FROM snap
), names AS (
	SELECT g.name AS segment FROM loyalty.segment g
	UNION
	SELECT ss.segment FROM loyalty.segment_summary ss
)
SELECT k.snapshot_id, k.as_of, n.segment, g.display_order,
	   coalesce(ss.customers, 0) AS customers,
	   coalesce(ss.revenue, 0) AS revenue,
	   round(coalesce(ss.customers, 0)::numeric / NULLIF(k.customers, 0), 4) AS customer_share,
	   k.day, k.month, k.last_of_day, k.last_of_month
FROM ranked k
CROSS JOIN names n
LEFT JOIN loyalty.segment_summary ss ON ss.snapshot_id = k.snapshot_id AND ss.segment = n.segment
LEFT JOIN loyalty.segment g ON g.name = n.segment;

COMMENT ON VIEW loyalty.segment_trend IS
	'Customers and revenue of every segment at every snapshot, 0 for empty segments; last_of_day / last_of_month pick one snapshot per day / month';
COMMENT ON COLUMN loyalty.segment_trend.snapshot_id IS 'Snapshot (segment_snapshots.snapshot_id)';
COMMENT ON COLUMN loyalty.segment_trend.as_of IS 'The time the snapshot scored the customers as of';
COMMENT ON COLUMN loyalty.segment_trend.segment IS 'Segment (every segment of the map, and any a snapshot recorded)';
COMMENT ON COLUMN loyalty.segment_trend.display_order IS 'Display order of the segment (NULL: no longer in the map)';
COMMENT ON COLUMN loyalty.segment_trend.customers IS 'Customers in the segment at the snapshot (0: none)';
COMMENT ON COLUMN loyalty.segment_trend.revenue IS 'Their spend in the scoring window (0: none)';
COMMENT ON COLUMN loyalty.segment_trend.customer_share IS 'Share of the snapshot''s customers (0..1, 4 decimals)';
COMMENT ON COLUMN loyalty.segment_trend.day IS 'Day of as_of in the program''s time zone (loyalty.settings)';
COMMENT ON COLUMN loyalty.segment_trend.month IS 'First day of the month of day';
COMMENT ON COLUMN loyalty.segment_trend.last_of_day IS
	'True for the latest snapshot (by as_of) of its day: filter on it for a daily chart';
COMMENT ON COLUMN loyalty.segment_trend.last_of_month IS
	'True for the latest snapshot (by as_of) of its month: filter on it for a monthly chart';

CREATE VIEW loyalty.segment_history AS
SELECT c.customer_id, c.snapshot_id, p.as_of, c.segment,
	   lag(c.segment) OVER w AS previous_segment,
	   c.score::text AS score,
	   loyalty.recency(c.score) AS r,
	   loyalty.frequency(c.score) AS f,
	   loyalty.monetary(c.score) AS m,
	   lead(c.snapshot_id) OVER w AS until_snapshot_id,
	   lead(p.as_of) OVER w AS until,
	   lead(c.snapshot_id) OVER w IS NULL AS is_current,
	   c.score AS rfm_score
FROM loyalty.segment_change c
LEFT JOIN loyalty.segment_snapshot p ON p.snapshot_id = c.snapshot_id
WINDOW w AS (PARTITION BY c.customer_id ORDER BY c.snapshot_id);

COMMENT ON VIEW loyalty.segment_history IS
	'Segment history per customer: one row per change of segment recorded by refresh_segments';
COMMENT ON COLUMN loyalty.segment_history.customer_id IS 'Customer key as tracked (text, collation "C")';
COMMENT ON COLUMN loyalty.segment_history.snapshot_id IS 'Snapshot that recorded the change';
COMMENT ON COLUMN loyalty.segment_history.as_of IS 'as_of of that snapshot: the customer is in segment from then on';
COMMENT ON COLUMN loyalty.segment_history.segment IS 'Segment entered (NULL: no longer a customer, e.g. every order deleted)';
COMMENT ON COLUMN loyalty.segment_history.previous_segment IS 'Segment before the change (NULL: first scoring, or back after leaving)';
COMMENT ON COLUMN loyalty.segment_history.score IS 'RFM score as text when the segment was entered (NULL when segment is NULL)';
COMMENT ON COLUMN loyalty.segment_history.r IS 'Recency score of score';
COMMENT ON COLUMN loyalty.segment_history.f IS 'Frequency score of score';
COMMENT ON COLUMN loyalty.segment_history.m IS 'Monetary score of score';
COMMENT ON COLUMN loyalty.segment_history.until_snapshot_id IS 'Snapshot of the next change (NULL: still current)';
COMMENT ON COLUMN loyalty.segment_history.until IS 'as_of of the next change (NULL: still current)';
COMMENT ON COLUMN loyalty.segment_history.is_current IS 'True for the customer''s latest change: the segment they are in now';
COMMENT ON COLUMN loyalty.segment_history.rfm_score IS
	'The score as loyalty.rfm_score (its operators need schema loyalty on the search_path, or OPERATOR(loyalty.=))';
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.segment_history'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE VIEW loyalty.customer_profile AS
WITH last AS (
	SELECT p.as_of, p.scoring_window, p.monetary
	FROM loyalty.segment_snapshot p
	ORDER BY p.snapshot_id DESC LIMIT 1
), cfg AS MATERIALIZED (
	SELECT l.as_of, l.monetary, z.tz,
		   ((l.as_of AT TIME ZONE z.tz) - l.scoring_window)::date AS start_day,
		   (l.as_of AT TIME ZONE z.tz)::date AS end_day,
		   (SELECT max(p.retained_from) FROM loyalty.segment_snapshot p) AS floor_day
	FROM last l
	CROSS JOIN (SELECT coalesce((SELECT st.timezone FROM loyalty.settings st), 'UTC') AS tz) z
), rfm AS (
	SELECT s.customer_id, s.first_order, s.last_order, s.order_count, s.spend_total,
		   s.score, s.segment, s.since, c.as_of AS scored_as_of,
		   /* the last order up to as_of, as refresh_segments takes it */
		   CASE WHEN s.score IS NULL OR s.last_order IS NULL THEN NULL
				WHEN s.last_order <= c.as_of THEN s.last_order
				WHEN b.last_day IS NOT NULL AND (c.floor_day IS NULL OR b.last_day >= c.floor_day)
					THEN least(b.last_day::timestamp AT TIME ZONE c.tz, c.as_of)
				WHEN s.first_order <= c.as_of
					THEN greatest(s.first_order, (c.floor_day - 1)::timestamp AT TIME ZONE c.tz)
		   END AS last_up_to,
		   CASE WHEN s.score IS NOT NULL THEN coalesce(b.orders, 0) END AS frequency,
		   CASE WHEN s.score IS NULL THEN NULL
				WHEN c.monetary = 'average'
					THEN CASE WHEN coalesce(b.orders, 0) = 0 THEN 0
							  ELSE b.spend / b.orders END
				ELSE coalesce(b.spend, 0) END AS monetary
	FROM loyalty.customer_stats s
	LEFT JOIN cfg c ON true
	LEFT JOIN LATERAL (
		SELECT sum(e.orders) FILTER (WHERE e.day >= c.start_day) AS orders,
			   sum(e.spend) FILTER (WHERE e.day >= c.start_day) AS spend,
			   max(e.day) FILTER (WHERE e.orders > 0) AS last_day
		FROM loyalty.day_buckets_entries(s.days) e
		WHERE s.score IS NOT NULL AND e.day <= c.end_day
	) b ON true
), keys AS (
	SELECT r.customer_id, r.first_order, r.last_order, r.order_count, r.spend_total,
		   /* whole days: the day field of the (hour-justified) difference */
		   extract(day FROM r.scored_as_of - r.last_up_to)::integer AS recency_days,
		   r.frequency, r.monetary, r.score, r.segment, r.since,
		   CASE WHEN r.score IS NOT NULL THEN r.scored_as_of END AS scored_as_of
	FROM rfm r
	UNION ALL
	SELECT a.customer_id COLLATE "C", NULL, NULL, NULL, NULL, NULL, NULL, NULL,
		   NULL, NULL, NULL, NULL
	FROM loyalty.points_account a
	WHERE NOT EXISTS (SELECT 1 FROM loyalty.customer_stats s
					  WHERE s.customer_id = a.customer_id COLLATE "C")
)
SELECT k.customer_id,
	   k.last_order,
	   k.recency_days,
	   k.frequency,
	   k.monetary,
	   loyalty.recency(k.score) AS r,
	   loyalty.frequency(k.score) AS f,
	   loyalty.monetary(k.score) AS m,
	   k.score::text AS score,
	   k.segment,
	   k.since AS segment_since,
	   a.tier,
	   coalesce(pts.available, 0)::bigint AS points_available,
	   coalesce(pts.pending, 0)::bigint AS points_pending,
	   a.tier_since,
	   k.first_order,
	   k.order_count AS orders_total,
	   k.spend_total,
	   k.scored_as_of,
	   k.score AS rfm_score
FROM keys k
LEFT JOIN loyalty.points_account a ON a.customer_id = k.customer_id COLLATE "default"
LEFT JOIN LATERAL (
	SELECT sum(l.remaining) FILTER (WHERE l.state = 'available' OR l.available_at <= pg_catalog.now()) AS available,
		   sum(l.remaining) FILTER (WHERE l.state <> 'available'
									AND (l.available_at IS NULL OR l.available_at > pg_catalog.now())) AS pending
	FROM loyalty.points_lot l
	WHERE l.customer_id = a.customer_id
	  AND l.state <> 'closed'
	  AND (l.expires_at IS NULL OR l.expires_at > pg_catalog.now())
) pts ON true;

COMMENT ON VIEW loyalty.customer_profile IS
	'One row per customer: last order, the RFM values, scores and segment of the last refresh, tier and points balance now';
COMMENT ON COLUMN loyalty.customer_profile.customer_id IS
	'Customer key (text, collation "C"); a bigint shop key joins as o.customer_id::text = customer_id (doc/bi.md)';
COMMENT ON COLUMN loyalty.customer_profile.last_order IS
	'Time of the latest tracked order, as last folded (NULL: none, or points only)';
COMMENT ON COLUMN loyalty.customer_profile.recency_days IS
	'Whole days from the last order made by scored_as_of to scored_as_of (NULL: no order by then, or not scored)';
COMMENT ON COLUMN loyalty.customer_profile.frequency IS
	'Orders in the scoring window ending at scored_as_of, or days with an order when the tracking counts days (tracked_table.frequency_unit; NULL: not scored)';
COMMENT ON COLUMN loyalty.customer_profile.monetary IS
	'Spend in that window, or the average basket (rfm_config.monetary at the refresh; NULL: not scored)';
COMMENT ON COLUMN loyalty.customer_profile.r IS 'Recency score of the last refresh';
COMMENT ON COLUMN loyalty.customer_profile.f IS 'Frequency score of the last refresh';
COMMENT ON COLUMN loyalty.customer_profile.m IS 'Monetary score of the last refresh';
COMMENT ON COLUMN loyalty.customer_profile.score IS
	'RFM score of the last refresh as text, three digits (''543''; NULL: not scored)';
COMMENT ON COLUMN loyalty.customer_profile.segment IS 'Segment of the last refresh (NULL: not scored)';
COMMENT ON COLUMN loyalty.customer_profile.segment_since IS
	'as_of of the refresh that put the customer into this segment';
COMMENT ON COLUMN loyalty.customer_profile.tier IS 'Current tier (NULL: no points account or no tier)';
COMMENT ON COLUMN loyalty.customer_profile.points_available IS
	'Spendable points now, as points_balance() counts them (0: no account)';
COMMENT ON COLUMN loyalty.customer_profile.points_pending IS
	'Points earned but not yet available now (0: no account)';
COMMENT ON COLUMN loyalty.customer_profile.tier_since IS 'Since when the customer holds the tier';
COMMENT ON COLUMN loyalty.customer_profile.first_order IS 'Time of the earliest tracked order, as last folded';
COMMENT ON COLUMN loyalty.customer_profile.orders_total IS 'Tracked orders, all time, as last folded';
COMMENT ON COLUMN loyalty.customer_profile.spend_total IS 'Tracked amounts (orders and refunds), all time, as last folded';
COMMENT ON COLUMN loyalty.customer_profile.scored_as_of IS
	'as_of of the last refresh_segments, the time recency_days, frequency and monetary are computed as of (NULL: not scored)';
COMMENT ON COLUMN loyalty.customer_profile.rfm_score IS
	'The score as loyalty.rfm_score (its operators need schema loyalty on the search_path, or OPERATOR(loyalty.=))';
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.customer_profile'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

-- the unchanged views: a comment on every column
COMMENT ON COLUMN loyalty.access_overview.role_name IS 'Role given the level';
COMMENT ON COLUMN loyalty.access_overview.level IS 'app, analyst or admin';
COMMENT ON COLUMN loyalty.access_overview.granted_at IS 'When grant_access() last gave it';
COMMENT ON COLUMN loyalty.access_overview.granted_by IS 'Role that called grant_access()';
COMMENT ON COLUMN loyalty.access_overview.role_exists IS 'False when the role was dropped since (reapply_grants() skips it)';
COMMENT ON COLUMN loyalty.segment_snapshots.snapshot_id IS 'Snapshot number, in the order the refreshes ran';
COMMENT ON COLUMN loyalty.segment_snapshots.as_of IS 'The time the customers were scored as of';
COMMENT ON COLUMN loyalty.segment_snapshots.taken_at IS 'When the refresh ran';
COMMENT ON COLUMN loyalty.segment_snapshots.customers IS 'Customers scored';
COMMENT ON COLUMN loyalty.segment_snapshots.segment_changes IS 'Customers whose segment changed (new customers included)';
COMMENT ON COLUMN loyalty.segment_snapshots.score_changes IS 'Customers whose score changed';
COMMENT ON COLUMN loyalty.segment_snapshots.left_customers IS 'Customers who left (no tracked row any more)';
COMMENT ON COLUMN loyalty.segment_snapshots.bins IS 'Scores per dimension used (rfm_config.bins)';
COMMENT ON COLUMN loyalty.segment_snapshots.scoring_window IS 'Window of frequency and monetary used (rfm_config.scoring_window)';
COMMENT ON COLUMN loyalty.segment_snapshots.monetary IS 'Monetary measure used: total or average (rfm_config.monetary)';
COMMENT ON COLUMN loyalty.segment_snapshots.method IS 'Scoring method used: quantile or thresholds (rfm_config.method)';
COMMENT ON COLUMN loyalty.segment_snapshots.took_ms IS 'Duration of the refresh in milliseconds';
COMMENT ON COLUMN loyalty.segment_overview.snapshot_id IS 'The last snapshot';
COMMENT ON COLUMN loyalty.segment_overview.as_of IS 'The time it scored the customers as of';
COMMENT ON COLUMN loyalty.segment_overview.segment IS 'Segment';
COMMENT ON COLUMN loyalty.segment_overview.display_order IS 'Display order of the segment (NULL: no longer in the map)';
COMMENT ON COLUMN loyalty.segment_overview.customers IS 'Customers in the segment';
COMMENT ON COLUMN loyalty.segment_overview.customer_share IS 'Share of all scored customers (0..1, 4 decimals)';
COMMENT ON COLUMN loyalty.segment_overview.revenue IS 'Spend of its customers in the scoring window';
COMMENT ON COLUMN loyalty.segment_overview.revenue_share IS 'Share of the revenue of all segments (0..1, 4 decimals)';
COMMENT ON COLUMN loyalty.segment_overview.revenue_per_customer IS 'revenue / customers, 2 decimals';
COMMENT ON COLUMN loyalty.segment_recency.snapshot_id IS 'The last snapshot';
COMMENT ON COLUMN loyalty.segment_recency.as_of IS 'The time it scored the customers as of';
COMMENT ON COLUMN loyalty.segment_recency.segment IS 'Segment';
COMMENT ON COLUMN loyalty.segment_recency.display_order IS 'Display order of the segment (NULL: no longer in the map)';
COMMENT ON COLUMN loyalty.segment_recency.recency_bucket IS 'Time from the last order to as_of: < 3 months, 3-6 months, > 6 months, no order';
COMMENT ON COLUMN loyalty.segment_recency.bucket_order IS 'Order of the bucket, 1 (< 3 months) to 4 (no order)';
COMMENT ON COLUMN loyalty.segment_recency.customers IS 'Customers of the segment in the bucket (0 included)';
COMMENT ON COLUMN loyalty.segment_recency.segment_share IS 'Share of the segment''s customers (0..1, 4 decimals)';
COMMENT ON COLUMN loyalty.segment_inactivity.snapshot_id IS 'The last snapshot';
COMMENT ON COLUMN loyalty.segment_inactivity.as_of IS 'The time it scored the customers as of';
COMMENT ON COLUMN loyalty.segment_inactivity.segment IS 'Segment';
COMMENT ON COLUMN loyalty.segment_inactivity.display_order IS 'Display order of the segment (NULL: no longer in the map)';
COMMENT ON COLUMN loyalty.segment_inactivity.customers IS 'Customers in the segment';
COMMENT ON COLUMN loyalty.segment_inactivity.inactive_customers IS 'Of them, without an order for rfm_config.inactive_after before as_of';
COMMENT ON COLUMN loyalty.segment_inactivity.inactive_share IS 'inactive_customers / customers (0..1, 4 decimals)';
COMMENT ON COLUMN loyalty.segment_migration_latest.from_snapshot_id IS 'The snapshot before the last one';
COMMENT ON COLUMN loyalty.segment_migration_latest.to_snapshot_id IS 'The last snapshot';
COMMENT ON COLUMN loyalty.segment_migration_latest.from_segment IS 'Segment at from_snapshot_id (NULL: not a customer then)';
COMMENT ON COLUMN loyalty.segment_migration_latest.to_segment IS 'Segment at to_snapshot_id (NULL: no longer a customer)';
COMMENT ON COLUMN loyalty.segment_migration_latest.customers IS 'Customers who moved from from_segment to to_segment (stayed when equal)';
COMMENT ON COLUMN loyalty.campaign_stats.campaign_id IS 'Campaign';
COMMENT ON COLUMN loyalty.campaign_stats.name IS 'Campaign name';
COMMENT ON COLUMN loyalty.campaign_stats.kind IS 'percent, fixed, free_shipping, buy_x_get_y or free_item';
COMMENT ON COLUMN loyalty.campaign_stats.currency IS 'Currency of the campaign''s amounts (ISO 4217)';
COMMENT ON COLUMN loyalty.campaign_stats.status IS 'paused, ended, scheduled or active, now';
COMMENT ON COLUMN loyalty.campaign_stats.codes IS 'Codes of the campaign (generated, public and bound)';
COMMENT ON COLUMN loyalty.campaign_stats.redemptions IS 'Redemptions, rolled back ones included';
COMMENT ON COLUMN loyalty.campaign_stats.rollbacks IS 'Redemptions rolled back (cancel, refund)';
COMMENT ON COLUMN loyalty.campaign_stats.active_redemptions IS 'redemptions - rollbacks';
COMMENT ON COLUMN loyalty.campaign_stats.customers IS 'Distinct customers who redeemed';
COMMENT ON COLUMN loyalty.campaign_stats.discount_total IS 'Discount granted, net of rollbacks, in the campaign currency';
COMMENT ON COLUMN loyalty.campaign_stats.active_reservations IS 'Reservations held and not expired, now';
COMMENT ON COLUMN loyalty.campaign_stats.total_cap IS 'Total redemption cap (NULL: none)';
COMMENT ON COLUMN loyalty.campaign_stats.remaining_cap IS 'Units of the cap still free: total_cap - active redemptions - active reservations (NULL: no cap)';
COMMENT ON COLUMN loyalty.tier_distribution.rank IS 'Rank of the tier, 0 = lowest (NULL: the row of customers without a tier)';
COMMENT ON COLUMN loyalty.tier_distribution.tier IS 'Tier name (NULL: customers without a tier)';
COMMENT ON COLUMN loyalty.tier_distribution.customers IS 'Points accounts in the tier (0 included)';
COMMENT ON COLUMN loyalty.tier_distribution.share_pct IS 'Share of the accounts with a tier, in percent, 1 decimal (NULL on the row without a tier)';
COMMENT ON COLUMN loyalty.points_liability.expiry_month IS 'First day of the month of the points'' last usable day, program time zone (NULL: never expire)';
COMMENT ON COLUMN loyalty.points_liability.customers IS 'Customers holding such points';
COMMENT ON COLUMN loyalty.points_liability.available IS 'Spendable points, as last settled';
COMMENT ON COLUMN loyalty.points_liability.pending IS 'Points not yet available (return window), as last settled';

/* ---------------------------------------------------------------------------
 * Issue 13, points: the program time zone is loyalty.settings.timezone
 * (copied above from a non-UTC points_program.timezone, so the column goes
 * now); tier_downgrade (on_refund undoes the upgrade a refunded order
 * caused, tier_history change 'refund'); points_return_for_order (partial
 * returns, ledger kind 'return', check_integrity counts them); replaying a
 * reversed earn is LP005 (C only); tier_progress judged by the current
 * thresholds; machine-readable DETAIL of the LP errors raised in SQL.
 * ------------------------------------------------------------------------ */
CREATE OR REPLACE VIEW loyalty.points_liability AS
SELECT date_trunc('month', (l.expires_at - interval '1 microsecond') AT TIME ZONE p.timezone)::date AS expiry_month,
	   count(DISTINCT l.customer_id) AS customers,
	   sum(l.remaining) FILTER (WHERE l.state = 'available') AS available,
	   sum(l.remaining) FILTER (WHERE l.state = 'pending') AS pending
FROM loyalty.points_lot l
CROSS JOIN (SELECT coalesce((SELECT s.timezone FROM loyalty.settings s), 'UTC') AS timezone) p
WHERE l.state <> 'closed'
GROUP BY 1;

CREATE OR REPLACE FUNCTION loyalty._points_tier_value(customer_id text, as_of timestamptz)
RETURNS numeric
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE
		WHEN p.tier_window_months IS NULL THEN
			CASE WHEN p.tier_basis = 'spend' THEN a.qualifying_spend ELSE a.qualifying END
		ELSE
			(SELECT coalesce(sum(CASE WHEN p.tier_basis = 'spend' THEN q.spend ELSE q.points END), 0)
			 FROM loyalty.points_qualifying q
			 WHERE q.customer_id = a.customer_id
			   AND q.month BETWEEN (date_trunc('month', $2 AT TIME ZONE p.timezone)
									- make_interval(months => p.tier_window_months - 1))::date
							   AND date_trunc('month', $2 AT TIME ZONE p.timezone)::date)
		END
	FROM loyalty.points_account a
	LEFT JOIN (SELECT coalesce((SELECT s.timezone FROM loyalty.settings s), 'UTC') AS timezone,
					  coalesce(pp.tier_basis, 'points') AS tier_basis,
					  pp.tier_window_months
			   FROM (SELECT 1) one LEFT JOIN loyalty.points_program pp ON true) p ON true
	WHERE a.customer_id = $1
$$;

COMMENT ON FUNCTION loyalty._points_tier_value(text, timestamptz) IS
	'Internal: qualifying points or spend of a customer in the tier window ending at as_of';

ALTER TABLE loyalty.points_program DROP CONSTRAINT points_program_timezone_check;
ALTER TABLE loyalty.points_program DROP COLUMN timezone;
ALTER TABLE loyalty.points_program ADD COLUMN tier_downgrade text NOT NULL DEFAULT 'none'
	CONSTRAINT points_program_tier_downgrade_check CHECK (tier_downgrade IN ('none', 'on_refund'));
COMMENT ON COLUMN loyalty.points_program.tier_downgrade IS
	'none: only evaluate_tiers lowers a tier (after the grace period); on_refund: a refund (reverse_points, points_return_for_order) of an order whose earning upgraded the customer undoes that upgrade at once when the remaining qualifying value no longer reaches the tier (recorded in tier_history as change refund)';

ALTER TABLE loyalty.tier_history DROP CONSTRAINT tier_history_change_check;
ALTER TABLE loyalty.tier_history ADD CONSTRAINT tier_history_change_check
	CHECK (change IN ('initial', 'upgrade', 'downgrade', 'refund'));
COMMENT ON TABLE loyalty.tier_history IS
	'Every change of a customer''s tier: initial (first account), upgrade (at once when earning, or at evaluation), downgrade (at evaluation), refund (a refund undid the upgrade its order caused, points_program.tier_downgrade = on_refund)';

CREATE TRIGGER settings_points_config_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON loyalty.settings
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._points_config_invalidate();
COMMENT ON TRIGGER settings_points_config_changed ON loyalty.settings IS
	'Drop the cached points settings (the program time zone) in every session when they change';

CREATE FUNCTION loyalty.points_return_for_order(customer_id text, order_ref text, return_ref text, amount numeric,
										 at timestamptz DEFAULT pg_catalog.now())
RETURNS loyalty.points_receipt
AS 'MODULE_PATHNAME', 'points_return_for_order'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.points_return_for_order(text, text, text, numeric, timestamptz) IS
	'Partial return of an order earned with earn_for_order: take back the points matching the returned amount (cumulative share rounded down; all returns of the whole amount take exactly what a full reversal takes) and its qualifying points and spend; idempotent on return_ref; LP012 beyond what is left of the order';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.points_return_for_order(text, text, text, numeric, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE OR REPLACE FUNCTION loyalty.tier_progress(customer_id text, at timestamptz DEFAULT pg_catalog.now(),
									  OUT tier text, OUT qualifying numeric, OUT basis text,
									  OUT next_tier text, OUT missing numeric,
									  OUT keeps_tier boolean, OUT message text)
RETURNS record
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cur record;
	nxt record;
	reached record;
	cur_rank integer;
BEGIN
	IF tier_progress.customer_id IS NULL OR tier_progress.at IS NULL THEN
		RAISE EXCEPTION 'customer_id and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, tier_progress.customer_id);
	SELECT coalesce(p.tier_basis, 'points') INTO basis
	FROM (SELECT 1) one LEFT JOIN loyalty.points_program p ON true;

	SELECT a.tier, t.rank, t.threshold INTO cur
	FROM loyalty.points_account a LEFT JOIN loyalty.tier t ON t.name = a.tier
	WHERE a.customer_id = tier_progress.customer_id;
	tier := cur.tier;
	cur_rank := cur.rank;
	qualifying := trim_scale(coalesce(loyalty._points_tier_value(tier_progress.customer_id, tier_progress.at), 0));
	keeps_tier := cur.threshold IS NULL OR qualifying >= cur.threshold;
	-- Judged by the current thresholds, not by the last evaluation: a tier
	-- above the held one that the value reaches is the customer's (upgrades
	-- happen at once: the next earning or evaluate_tiers records it).
	IF FOUND THEN
		SELECT r.name, r.rank INTO reached
		FROM loyalty.tier r WHERE r.threshold <= qualifying
		ORDER BY r.rank DESC LIMIT 1;
		IF FOUND AND (cur_rank IS NULL OR reached.rank > cur_rank) THEN
			tier := reached.name;
			cur_rank := reached.rank;
			keeps_tier := true;
		END IF;
	END IF;

	SELECT n.name, n.threshold INTO nxt
	FROM loyalty.tier n
	WHERE (cur_rank IS NULL AND n.threshold > 0) OR n.rank > cur_rank
	ORDER BY n.rank LIMIT 1;
	IF FOUND THEN
		next_tier := nxt.name;
		missing := trim_scale(greatest(nxt.threshold - qualifying, 0));
	END IF;
	IF NOT keeps_tier THEN
		message := format(CASE basis WHEN 'points' THEN '%s points to keep %s' ELSE '%s more spend to keep %s' END,
						  trim_scale(cur.threshold - qualifying), tier);
	ELSIF next_tier IS NOT NULL THEN
		message := format(CASE basis WHEN 'points' THEN '%s points to %s' ELSE '%s more spend to %s' END,
						  missing, next_tier);
	ELSIF tier IS NOT NULL THEN
		message := format('top tier %s reached', tier);
	ELSE
		message := 'no tiers configured';
	END IF;
END;
$$;

COMMENT ON FUNCTION loyalty.tier_progress(text, timestamptz) IS
	'Tier of a customer judged by the current thresholds (a higher tier the value reaches counts at once), qualifying points (or spend) in the window, the next tier and what is missing ("120 points to Gold"), whether the current tier''s threshold is still met (else the message says what keeps it)';

CREATE FUNCTION loyalty._points_refund_downgrade(customer text, earned_at timestamptz, refund_at timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	up record;
	cur record;
	target record;
	floor_tier record;
	v numeric;
BEGIN
	SELECT h.from_tier, h.to_tier INTO up
	FROM loyalty.tier_history h
	WHERE h.customer_id = customer AND h.change = 'upgrade' AND h.changed_at = earned_at
	ORDER BY h.history_id DESC LIMIT 1;
	IF NOT FOUND THEN
		RETURN;
	END IF;
	SELECT a.tier, t.rank, t.threshold INTO cur
	FROM loyalty.points_account a JOIN loyalty.tier t ON t.name = a.tier
	WHERE a.customer_id = customer;
	IF NOT FOUND THEN
		RETURN;
	END IF;
	SELECT t.name, t.rank, t.threshold INTO floor_tier FROM loyalty.tier t WHERE t.name = up.from_tier;
	IF floor_tier.rank IS NOT NULL AND cur.rank <= floor_tier.rank THEN
		RETURN;
	END IF;
	v := coalesce(loyalty._points_tier_value(customer, refund_at), 0);
	IF v >= cur.threshold THEN
		RETURN;
	END IF;
	SELECT t.name, t.rank, t.threshold INTO target
	FROM loyalty.tier t WHERE t.threshold <= v AND t.rank < cur.rank
	ORDER BY t.rank DESC LIMIT 1;
	IF floor_tier.rank IS NOT NULL AND (target.rank IS NULL OR target.rank < floor_tier.rank) THEN
		target := floor_tier;
	END IF;
	UPDATE loyalty.points_account a
	SET tier = target.name, tier_since = refund_at,
		below_since = CASE WHEN v < target.threshold THEN refund_at END,
		updated_at = now()
	WHERE a.customer_id = customer;
	INSERT INTO loyalty.tier_history (customer_id, changed_at, from_tier, to_tier, change, qualifying)
	VALUES (customer, refund_at, cur.tier, target.name, 'refund', v);
END;
$$;

COMMENT ON FUNCTION loyalty._points_refund_downgrade(text, timestamptz, timestamptz) IS
	'Internal: with tier_downgrade = on_refund, undo the upgrade a refunded earning caused when the qualifying value left no longer reaches the tier';

CREATE OR REPLACE FUNCTION loyalty.check_integrity()
RETURNS TABLE (problem text, customer_id text, detail text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	WITH lot_sums AS (
		SELECT l.customer_id,
			   coalesce(sum(l.remaining) FILTER (WHERE l.state = 'available'), 0) AS available,
			   coalesce(sum(l.remaining) FILTER (WHERE l.state = 'pending'), 0) AS pending,
			   min(LEAST(CASE WHEN l.state = 'pending' THEN l.available_at END, l.expires_at))
				   FILTER (WHERE l.state <> 'closed') AS next_event
		FROM loyalty.points_lot l GROUP BY l.customer_id
	), ledger_sums AS (
		SELECT e.customer_id, sum(e.points) AS points, sum(e.debt_change) AS debt,
			   sum(e.qualifying) AS qualifying, coalesce(sum(e.amount), 0) AS spend,
			   coalesce(sum(e.points) FILTER (WHERE e.kind = 'earn'), 0) AS earned
		FROM loyalty.points_ledger e GROUP BY e.customer_id
	), reversed_earnings AS (
		-- a reversed earning counts as taken back whole; partial returns
		-- (kind return) of one not reversed count what they took
		SELECT x.customer_id, sum(x.points) AS points
		FROM (SELECT e.customer_id, e.points
			  FROM loyalty.points_ledger e
			  WHERE e.kind = 'earn'
				AND e.entry_id IN (SELECT unnest(r.reverses) FROM loyalty.points_ledger r WHERE r.kind = 'reverse')
			  UNION ALL
			  SELECT t.customer_id, (t.detail ->> 'taken')::bigint
			  FROM loyalty.points_ledger t
			  WHERE t.kind = 'return'
				AND NOT t.reverses[1] IN (SELECT unnest(r.reverses) FROM loyalty.points_ledger r WHERE r.kind = 'reverse')) x
		GROUP BY x.customer_id
	), moves AS (
		SELECT m.lot_id, sum(m.delta) AS delta,
			   sum(-m.delta) FILTER (WHERE m.kind = 'expire') AS expired
		FROM (SELECT e.kind, u.lot_id, u.delta
			  FROM loyalty.points_ledger e, unnest(e.lot_ids, e.lot_points) AS u(lot_id, delta)) m
		GROUP BY m.lot_id
	), buckets AS (
		SELECT q.customer_id, sum(q.points) AS points, sum(q.spend) AS spend
		FROM loyalty.points_qualifying q GROUP BY q.customer_id
	), last_tier AS (
		SELECT DISTINCT ON (h.customer_id) h.customer_id, h.to_tier
		FROM loyalty.tier_history h ORDER BY h.customer_id, h.history_id DESC
	)
	SELECT 'negative balance', a.customer_id,
		   format('available %s, pending %s, debt %s', a.available, a.pending, a.debt)
	FROM loyalty.points_account a
	WHERE a.available < 0 OR a.pending < 0 OR a.debt < 0
	UNION ALL
	SELECT 'balance differs from open lots', a.customer_id,
		   format('account available %s / pending %s, lots %s / %s',
				  a.available, a.pending, coalesce(s.available, 0), coalesce(s.pending, 0))
	FROM loyalty.points_account a LEFT JOIN lot_sums s ON s.customer_id = a.customer_id
	WHERE a.available <> coalesce(s.available, 0) OR a.pending <> coalesce(s.pending, 0)
	UNION ALL
	SELECT 'balance differs from ledger', a.customer_id,
		   format('available + pending - debt = %s, ledger sum %s',
				  a.available + a.pending - a.debt, coalesce(g.points, 0))
	FROM loyalty.points_account a LEFT JOIN ledger_sums g ON g.customer_id = a.customer_id
	WHERE a.available + a.pending - a.debt <> coalesce(g.points, 0)
	UNION ALL
	SELECT 'debt differs from ledger', a.customer_id,
		   format('debt %s, ledger debt changes %s', a.debt, coalesce(g.debt, 0))
	FROM loyalty.points_account a LEFT JOIN ledger_sums g ON g.customer_id = a.customer_id
	WHERE a.debt <> coalesce(g.debt, 0)
	UNION ALL
	SELECT 'debt with open lots', a.customer_id,
		   format('debt %s while %s points are open', a.debt, a.available + a.pending)
	FROM loyalty.points_account a
	WHERE a.debt > 0 AND (a.available > 0 OR a.pending > 0
						  OR EXISTS (SELECT 1 FROM loyalty.points_lot l
									 WHERE l.customer_id = a.customer_id AND l.state <> 'closed'))
	UNION ALL
	SELECT 'totals differ from ledger', a.customer_id,
		   format('lifetime %s / qualifying %s / spend %s, ledger %s / %s / %s',
				  a.lifetime_earned, a.qualifying, a.qualifying_spend,
				  coalesce(g.earned, 0) - coalesce(r.points, 0), coalesce(g.qualifying, 0), coalesce(g.spend, 0))
	FROM loyalty.points_account a
	LEFT JOIN ledger_sums g ON g.customer_id = a.customer_id
	LEFT JOIN reversed_earnings r ON r.customer_id = a.customer_id
	WHERE a.lifetime_earned <> coalesce(g.earned, 0) - coalesce(r.points, 0)
	   OR a.qualifying <> coalesce(g.qualifying, 0)
	   OR a.qualifying_spend <> coalesce(g.spend, 0)
	UNION ALL
	SELECT 'qualifying buckets differ from account', a.customer_id,
		   format('account %s / %s, monthly buckets %s / %s',
				  a.qualifying, a.qualifying_spend, coalesce(b.points, 0), coalesce(b.spend, 0))
	FROM loyalty.points_account a LEFT JOIN buckets b ON b.customer_id = a.customer_id
	WHERE a.qualifying <> coalesce(b.points, 0) OR a.qualifying_spend <> coalesce(b.spend, 0)
	UNION ALL
	SELECT 'settling hint too late', a.customer_id,
		   format('next_event_at %s, first lot event %s', a.next_event_at, s.next_event)
	FROM loyalty.points_account a JOIN lot_sums s ON s.customer_id = a.customer_id
	WHERE s.next_event IS NOT NULL AND (a.next_event_at IS NULL OR a.next_event_at > s.next_event)
	UNION ALL
	SELECT 'lot differs from ledger', l.customer_id,
		   format('lot %s: remaining %s, expired %s; ledger changes %s, expiries %s',
				  l.lot_id, l.remaining, l.expired, coalesce(m.delta, 0), coalesce(m.expired, 0))
	FROM loyalty.points_lot l LEFT JOIN moves m ON m.lot_id = l.lot_id
	WHERE l.remaining <> coalesce(m.delta, 0) OR l.expired <> coalesce(m.expired, 0)
	   OR l.remaining + l.expired > l.points
	UNION ALL
	SELECT 'malformed lot', l.customer_id, format('lot %s (%s, %s of %s points)', l.lot_id, l.state, l.remaining, l.points)
	FROM loyalty.points_lot l
	WHERE l.state NOT IN ('pending', 'available', 'closed') OR l.points <= 0 OR l.expired < 0
	   OR (l.state = 'closed') <> (l.remaining = 0)
	   OR (l.state = 'pending' AND l.available_at IS NULL)
	   OR l.available_at >= l.expires_at
	UNION ALL
	SELECT 'malformed ledger entry', e.customer_id, format('entry %s (%s)', e.entry_id, e.kind)
	FROM loyalty.points_ledger e
	WHERE e.kind NOT IN ('earn', 'spend', 'expire', 'reverse', 'adjust', 'return')
	   OR (e.reference IS NULL) <> (e.kind = 'expire')
	   OR coalesce(cardinality(e.lot_ids) <> cardinality(e.lot_points),
				   (e.lot_ids IS NULL) <> (e.lot_points IS NULL))
	UNION ALL
	SELECT 'ledger entry inconsistent', e.customer_id,
		   format('entry %s: points %s, lot changes %s, debt change %s',
				  e.entry_id, e.points, coalesce(x.total, 0), e.debt_change)
	FROM loyalty.points_ledger e
	CROSS JOIN LATERAL (SELECT sum(u) AS total FROM unnest(e.lot_points) u) x
	WHERE e.points <> coalesce(x.total, 0) - e.debt_change
	UNION ALL
	SELECT 'lot or entry without account', o.customer_id, o.what
	FROM (SELECT l.customer_id, format('lot %s', l.lot_id) AS what FROM loyalty.points_lot l
		  UNION ALL
		  SELECT e.customer_id, format('entry %s', e.entry_id) FROM loyalty.points_ledger e) o
	WHERE NOT EXISTS (SELECT 1 FROM loyalty.points_account a WHERE a.customer_id = o.customer_id)
	UNION ALL
	SELECT 'lot of another customer', e.customer_id,
		   format('entry %s changes lot %s of customer %s', e.entry_id, l.lot_id, l.customer_id)
	FROM loyalty.points_ledger e
	CROSS JOIN LATERAL unnest(e.lot_ids) AS u(lot_id)
	JOIN loyalty.points_lot l ON l.lot_id = u.lot_id
	WHERE l.customer_id <> e.customer_id
	UNION ALL
	SELECT 'duplicate reference', min(e.customer_id),
		   format('reference %s: %s entries of kind %s', e.reference, count(*), e.kind)
	FROM loyalty.points_ledger e WHERE e.reference IS NOT NULL
	GROUP BY e.reference, e.kind HAVING count(*) > 1
	UNION ALL
	SELECT 'reference of several customers', min(e.customer_id),
		   format('reference %s used by %s customers', e.reference, count(DISTINCT e.customer_id))
	FROM loyalty.points_ledger e WHERE e.reference IS NOT NULL AND e.kind <> 'adjust'
	GROUP BY e.reference HAVING count(DISTINCT e.customer_id) > 1
	UNION ALL
	SELECT 'reference not owned by the customer', e.customer_id,
		   format('entry %s: reference %s, owner %s', e.entry_id, e.reference, coalesce(o.customer_id, 'none'))
	FROM loyalty.points_ledger e
	LEFT JOIN loyalty.points_reference o ON o.reference = e.reference
	WHERE e.reference IS NOT NULL AND o.customer_id IS DISTINCT FROM e.customer_id
	UNION ALL
	SELECT 'unknown tier', a.customer_id, format('tier %s is not in loyalty.tier', a.tier)
	FROM loyalty.points_account a
	WHERE a.tier IS NOT NULL AND NOT EXISTS (SELECT 1 FROM loyalty.tier t WHERE t.name = a.tier)
	UNION ALL
	SELECT 'tier differs from history', a.customer_id,
		   format('tier %s, last change to %s', a.tier, h.to_tier)
	FROM loyalty.points_account a JOIN last_tier h ON h.customer_id = a.customer_id
	WHERE a.tier IS DISTINCT FROM h.to_tier
	-- references between configuration tables kept without foreign keys
	-- (so that pg_restore --jobs can load them in any order)
	UNION ALL
	SELECT 'segment rule of unknown segment', NULL::text,
		   format('rule R%s-%s F%s-%s M%s-%s names segment %s', r.r_min, r.r_max, r.f_min, r.f_max,
				  r.m_min, r.m_max, r.segment)
	FROM loyalty.segment_rule r
	WHERE NOT EXISTS (SELECT 1 FROM loyalty.segment s WHERE s.name = r.segment)
	UNION ALL
	SELECT 'campaign rule of unknown campaign', NULL::text,
		   format('rule %s names campaign %s', r.rule_id, r.campaign_id)
	FROM loyalty.campaign_rule r
	WHERE NOT EXISTS (SELECT 1 FROM loyalty.campaign c WHERE c.campaign_id = r.campaign_id)
	UNION ALL
	SELECT 'campaign rule of unknown kind', NULL::text,
		   format('rule %s of campaign %s is of kind %s', r.rule_id, r.campaign_id, r.kind)
	FROM loyalty.campaign_rule r
	WHERE NOT EXISTS (SELECT 1 FROM loyalty.eligibility_kind k WHERE k.kind = r.kind)
	ORDER BY 1, 2, 3
$$;

COMMENT ON FUNCTION loyalty.check_integrity() IS
	'Every violation of the points invariants (balance = open lots = ledger sum, no negative balance, debt, well-formed lots and entries, references and their one owner, totals, tiers and that they exist) and every dangling reference between configuration tables (segment rules, campaign rules); empty when healthy';

CREATE OR REPLACE FUNCTION loyalty._points_exchange_void(spend_entry bigint, at timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	ex record;
	cp record;
BEGIN
	SELECT e.reference, e.coupon_id, e.code INTO ex
	FROM loyalty.points_exchange e WHERE e.entry_id = spend_entry;
	IF NOT FOUND THEN
		RETURN;
	END IF;
	SELECT c.uses, c.voided_at INTO cp
	FROM loyalty.coupon c WHERE c.coupon_id = ex.coupon_id FOR NO KEY UPDATE;
	IF NOT FOUND OR cp.voided_at IS NOT NULL THEN
		RETURN;
	END IF;
	IF cp.uses > 0 OR EXISTS (SELECT 1 FROM loyalty.reservation h
							  WHERE h.coupon_id = ex.coupon_id AND h.state = 'held' AND h.expires_at > at) THEN
		RAISE EXCEPTION 'exchange "%" cannot be reversed: its coupon is %', ex.reference,
			CASE WHEN cp.uses > 0 THEN 'redeemed' ELSE 'reserved' END
			USING ERRCODE = 'LP010',
				  DETAIL = pg_catalog.json_build_object('reason', 'coupon_in_use', 'reference', ex.reference,
								  'coupon_id', ex.coupon_id,
								  'state', CASE WHEN cp.uses > 0 THEN 'redeemed' ELSE 'reserved' END)::text,
				  HINT = format('Coupon %s is in use; reversing the exchange would return the points while the coupon stays used. Roll the redemption back first (rollback_redemption), or let the reservation expire.', ex.code);
	END IF;
	UPDATE loyalty.coupon c SET voided_at = at WHERE c.coupon_id = ex.coupon_id;
END;
$$;

COMMENT ON FUNCTION loyalty._points_exchange_void(bigint, timestamptz) IS
	'Internal: when reverse_points reverses an exchange''s spend, void its coupon, or refuse (LP010) once it is redeemed or reserved';

CREATE OR REPLACE FUNCTION loyalty.exchange_points(customer_id text, campaign_id bigint, reference text,
										at timestamptz DEFAULT pg_catalog.now(),
										OUT code text, OUT points bigint, OUT available bigint)
RETURNS record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	p_customer text := customer_id;
	p_campaign bigint := campaign_id;
	p_reference text := reference;
	reward record;
	camp record;
	ex record;
	spent record;
	issued record;
	before bigint[];
	in_use bigint;
	reversal bigint;
BEGIN
	IF p_customer IS NULL OR p_campaign IS NULL OR p_reference IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, campaign_id, reference and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, p_customer);
	PERFORM loyalty._points_check_key('reference'::text, p_reference);

	-- a repeat returns the first exchange
	SELECT * INTO ex FROM loyalty.points_exchange e WHERE e.reference = p_reference;
	IF FOUND THEN
		IF ex.customer_id <> p_customer OR ex.campaign_id <> p_campaign THEN
			RAISE EXCEPTION 'reference "%" was already used for a different exchange', p_reference
				USING ERRCODE = 'LP002',
					  DETAIL = pg_catalog.json_build_object('reason', 'reference_conflict', 'reference', p_reference,
									  'conflict', CASE WHEN ex.customer_id <> p_customer THEN 'other_customer' ELSE 'different_request' END,
									  'entry_id', ex.entry_id)::text;
		END IF;
		-- a reversed exchange is not replayed: its code is void and its
		-- receipt's balance stale (LP005, as spend_points)
		SELECT v.entry_id INTO reversal FROM loyalty.points_ledger v
		WHERE v.reference = 'exchange:' || p_reference AND v.kind = 'reverse';
		IF FOUND THEN
			RAISE EXCEPTION 'reference "exchange:%" was reversed', p_reference
				USING ERRCODE = 'LP005',
					  DETAIL = pg_catalog.json_build_object('reason', 'reference_reversed',
									  'reference', 'exchange:' || p_reference,
									  'reversal_entry_id', reversal)::text,
					  HINT = 'The exchange was reversed and its coupon voided; use a new reference.';
		END IF;
		code := ex.code; points := ex.points; available := ex.available_after;
		RETURN;
	END IF;

	SELECT * INTO reward FROM loyalty.points_reward r WHERE r.campaign_id = p_campaign AND r.active;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'campaign % is not offered for points', p_campaign
			USING ERRCODE = 'LP007',
				  DETAIL = pg_catalog.json_build_object('reason', 'reward_not_offered', 'campaign_id', p_campaign)::text,
				  HINT = 'Offer it with a row in loyalty.points_reward.';
	END IF;
	SELECT c.paused, c.starts_at, c.ends_at, c.total_cap, c.per_customer_cap INTO camp
	FROM loyalty.campaign c WHERE c.campaign_id = p_campaign;
	IF NOT FOUND OR camp.paused OR camp.ends_at <= at THEN
		RAISE EXCEPTION 'campaign % cannot be exchanged for points now', p_campaign
			USING ERRCODE = 'LP008',
				  DETAIL = pg_catalog.json_build_object('reason', 'campaign_not_exchangeable', 'campaign_id', p_campaign,
								  'state', CASE WHEN NOT FOUND THEN 'missing' WHEN camp.paused THEN 'paused' ELSE 'ended' END)::text;
	END IF;

	IF camp.total_cap IS NOT NULL OR camp.per_customer_cap IS NOT NULL THEN
		UPDATE loyalty.points_reward r SET points = r.points WHERE r.campaign_id = p_campaign;
		IF camp.total_cap IS NOT NULL THEN
			SELECT c.total_cap INTO camp.total_cap
			FROM loyalty.campaign c WHERE c.campaign_id = p_campaign FOR NO KEY UPDATE;
			in_use := loyalty._coupon_cap_units(p_campaign, NULL, at);
			IF in_use >= camp.total_cap THEN
				RAISE EXCEPTION 'campaign % has no coupon left to exchange', p_campaign
					USING ERRCODE = 'LP009',
						  DETAIL = pg_catalog.json_build_object('reason', 'cap_reached', 'campaign_id', p_campaign,
										  'cap', 'total', 'limit', camp.total_cap, 'in_use', in_use)::text,
						  HINT = 'Units in use are redeemed, reserved or sold for points. No points were spent.';
			END IF;
		END IF;
		IF camp.per_customer_cap IS NOT NULL THEN
			in_use := loyalty._coupon_cap_units(p_campaign, p_customer, at);
			IF in_use >= camp.per_customer_cap THEN
				RAISE EXCEPTION 'customer "%" cannot get another coupon of campaign %', p_customer, p_campaign
					USING ERRCODE = 'LP009',
						  DETAIL = pg_catalog.json_build_object('reason', 'cap_reached', 'campaign_id', p_campaign,
										  'cap', 'per_customer', 'limit', camp.per_customer_cap, 'in_use', in_use)::text,
						  HINT = 'Units in use are redeemed, reserved or sold for points. No points were spent.';
			END IF;
		END IF;
	END IF;

	SELECT s.* INTO spent FROM loyalty.spend_points(p_customer, reward.points, 'exchange:' || p_reference, at) s;
	-- a concurrent first call with this reference committed while the spend waited
	SELECT * INTO ex FROM loyalty.points_exchange e WHERE e.reference = p_reference;
	IF FOUND THEN
		IF ex.customer_id <> p_customer OR ex.campaign_id <> p_campaign THEN
			RAISE EXCEPTION 'reference "%" was already used for a different exchange', p_reference
				USING ERRCODE = 'LP002',
					  DETAIL = pg_catalog.json_build_object('reason', 'reference_conflict', 'reference', p_reference,
									  'conflict', CASE WHEN ex.customer_id <> p_customer THEN 'other_customer' ELSE 'different_request' END,
									  'entry_id', ex.entry_id)::text;
		END IF;
		code := ex.code; points := ex.points; available := ex.available_after;
		RETURN;
	END IF;
	IF (SELECT e.created_at FROM loyalty.points_ledger e WHERE e.entry_id = spent.entry_id) <> now() THEN
		RAISE EXCEPTION 'reference "exchange:%" was already used by a spend that is not an exchange', p_reference
			USING ERRCODE = 'LP002',
				  DETAIL = pg_catalog.json_build_object('reason', 'reference_conflict',
								  'reference', 'exchange:' || p_reference,
								  'conflict', 'different_request', 'entry_id', spent.entry_id)::text;
	END IF;

	before := ARRAY(SELECT c.coupon_id FROM loyalty.coupon c
					WHERE c.campaign_id = p_campaign AND c.customer_id = p_customer);
	PERFORM loyalty.generate_codes(p_campaign, 1, reward.code_pattern, ARRAY[p_customer]);
	SELECT c.coupon_id, c.code::text AS code INTO STRICT issued
	FROM loyalty.coupon c
	WHERE c.campaign_id = p_campaign AND c.customer_id = p_customer
	  AND c.coupon_id <> ALL (before) AND loyalty._points_inserted_here(c.xmin);
	-- the code holds the cap unit it was sold for until used or voided
	UPDATE loyalty.coupon c SET holds_cap_unit = true WHERE c.coupon_id = issued.coupon_id;

	INSERT INTO loyalty.points_exchange (reference, customer_id, campaign_id, points, coupon_id, code,
										 entry_id, available_after, effective_at)
	VALUES (p_reference, p_customer, p_campaign, reward.points, issued.coupon_id, issued.code,
			spent.entry_id, spent.available, at);
	code := issued.code; points := reward.points; available := spent.available;
END;
$$;

COMMENT ON FUNCTION loyalty.exchange_points(text, bigint, text, timestamptz) IS
	'Spend the points a campaign''s coupon costs (loyalty.points_reward) and issue a single-use code bound to the customer; idempotent on reference; LP001 short, LP007 not offered, LP008 campaign paused or ended, LP009 cap reached (nothing spent)';

-- Issue 13, One API (item 7): the consistent names (coupon_validate, coupon_reserve,
-- coupon_redeem, coupon_rollback, points_earn, points_spend, ...; doc/api.md),
-- exactly as src/coupon/coupon_api.sql and src/points/points_api.sql create
-- them, and the old names' comments saying they are deprecated.  New objects
-- only: no data changes; the grants below give them to the roles of each level.

/* ---------------------------------------------------------------------------
 * coupon_api.sql: the coupon lifecycle under the consistent API names
 *
 * Since 0.3.0 every API call takes customer_id first, then the caller's
 * reference (order_ref), then what is acted on (code), then the order
 * context; options follow with defaults, to be passed by name (doc/api.md).
 * One signature per name: the order context is jsonb only
 * ('{"amount": 120.00}' for a shop without item data), so untyped
 * parameters (node-postgres, JDBC) always resolve.  The functions reach the
 * implementations of the old names with the arguments rearranged
 * (coupon_api.c); the old names stay, deprecated, until 0.4.0.
 * ------------------------------------------------------------------------ */

/* functions */

CREATE FUNCTION loyalty.coupon_validate(customer_id text, code text, order_context jsonb,
										order_ref text DEFAULT NULL,
										OUT valid boolean, OUT reason text,
										OUT discount numeric)
RETURNS record
AS 'MODULE_PATHNAME', 'coupon_api_validate'
LANGUAGE C STABLE PARALLEL RESTRICTED SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.coupon_validate(text, text, jsonb, text) IS
	'Read-only check of a code for a customer and an order (order_context: {"amount": ...} or items): (valid, reason, discount); reason is a stable token; with order_ref => the order''s other coupons count';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.coupon_validate(text, text, jsonb, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.coupon_reserve(customer_id text, order_ref text, code text,
									   order_context jsonb,
									   ttl interval DEFAULT '15 minutes',
									   OUT discount numeric, OUT expires_at timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'coupon_api_reserve'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.coupon_reserve(text, text, text, jsonb, interval) IS
	'Hold one unit of every cap of a code for a checkout until expires_at (ttl => ...); coupon_redeem of the same order consumes it; failures raise LY0nn';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.coupon_reserve(text, text, text, jsonb, interval)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.coupon_redeem(customer_id text, order_ref text, code text,
									  order_context jsonb)
RETURNS numeric
AS 'MODULE_PATHNAME', 'coupon_api_redeem'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.coupon_redeem(text, text, text, jsonb) IS
	'Redeem a code for an order, atomically; returns the discount; a repeat for the same order and code returns the first discount; failures raise LY0nn';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.coupon_redeem(text, text, text, jsonb)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.coupon_rollback(customer_id text, order_ref text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'coupon_api_rollback'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.coupon_rollback(text, text) IS
	'Cancel / refund an order of the customer: reverse its redemptions (uses given back, history kept), release its reservations, close the order; false if nothing to give back; LY020 if the order is another customer''s';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.coupon_rollback(text, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* the old names: deprecated, same behaviour (doc/api.md has the mapping) */

COMMENT ON FUNCTION loyalty.validate_coupon(text, text, jsonb, text) IS
	'Deprecated since 0.3.0, use loyalty.coupon_validate(customer_id, code, order_context, order_ref => ...); removed in 0.4.0';
COMMENT ON FUNCTION loyalty.validate_coupon(text, text, numeric, text) IS
	'Deprecated since 0.3.0, use loyalty.coupon_validate(customer_id, code, pg_catalog.jsonb_build_object(''amount'', amount), order_ref => ...); removed in 0.4.0';
COMMENT ON FUNCTION loyalty.reserve_coupon(text, text, text, jsonb, interval) IS
	'Deprecated since 0.3.0, use loyalty.coupon_reserve(customer_id, order_ref, code, order_context, ttl => ...); removed in 0.4.0';
COMMENT ON FUNCTION loyalty.reserve_coupon(text, text, text, numeric, interval) IS
	'Deprecated since 0.3.0, use loyalty.coupon_reserve(customer_id, order_ref, code, pg_catalog.jsonb_build_object(''amount'', amount), ttl => ...); removed in 0.4.0';
COMMENT ON FUNCTION loyalty.redeem_coupon(text, text, text, jsonb) IS
	'Deprecated since 0.3.0, use loyalty.coupon_redeem(customer_id, order_ref, code, order_context); removed in 0.4.0';
COMMENT ON FUNCTION loyalty.redeem_coupon(text, text, text, numeric) IS
	'Deprecated since 0.3.0, use loyalty.coupon_redeem(customer_id, order_ref, code, pg_catalog.jsonb_build_object(''amount'', amount)); removed in 0.4.0';
COMMENT ON FUNCTION loyalty.rollback_redemption(text) IS
	'Deprecated since 0.3.0, use loyalty.coupon_rollback(customer_id, order_ref); removed in 0.4.0';

/* ---------------------------------------------------------------------------
 * points_api.sql: the points calls under the consistent API names
 *
 * Since 0.3.0 every API call takes customer_id first, then the caller's
 * reference, then what is acted on (points, amount, action, campaign_id);
 * options follow with defaults, to be passed by name, and the first option
 * of every call that writes is at (a stray positional time lands there,
 * where a future time is refused, never in a reason).  One signature per
 * name (doc/api.md).  The C ones reach the implementations of the old names
 * with the arguments rearranged (points_api.c); points_exchange and
 * points_earn_coupon_bonus call the PL/pgSQL functions of the old names.
 * The old names stay, deprecated, until 0.4.0.
 * ------------------------------------------------------------------------ */

/* functions */

CREATE FUNCTION loyalty.points_earn(customer_id text, reference text, points bigint,
									at timestamptz DEFAULT pg_catalog.now(),
									reason text DEFAULT NULL,
									pending_until timestamptz DEFAULT NULL,
									expires_at timestamptz DEFAULT NULL,
									qualifying boolean DEFAULT true)
RETURNS loyalty.points_receipt
AS 'MODULE_PATHNAME', 'points_api_earn'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.points_earn(text, text, bigint, timestamptz, text, timestamptz, timestamptz, boolean) IS
	'Credit points to a customer (account created on first credit), pending until pending_until, expiring at expires_at (NULL: program default; infinity: never); idempotent on reference';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.points_earn(text, text, bigint, timestamptz, text, timestamptz, timestamptz, boolean)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.points_spend(customer_id text, reference text, points bigint,
									 at timestamptz DEFAULT pg_catalog.now())
RETURNS loyalty.points_receipt
AS 'MODULE_PATHNAME', 'points_api_spend'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.points_spend(text, text, bigint, timestamptz) IS
	'Spend available points first in, first out; SQLSTATE LP001 when the balance is short; idempotent on reference';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.points_spend(text, text, bigint, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.points_earn_for_order(customer_id text, reference text, amount numeric,
											  at timestamptz DEFAULT pg_catalog.now(),
											  currency text DEFAULT NULL)
RETURNS loyalty.points_receipt
AS 'MODULE_PATHNAME', 'points_api_earn_for_order'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.points_earn_for_order(text, text, numeric, timestamptz, text) IS
	'Earn the points of an order by the active purchase rules (tier multiplier, minimum amount, caps, windows); the amount counts as qualifying spend; idempotent on reference';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.points_earn_for_order(text, text, numeric, timestamptz, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.points_earn_for_action(customer_id text, reference text, action text,
											   at timestamptz DEFAULT pg_catalog.now())
RETURNS loyalty.points_receipt
AS 'MODULE_PATHNAME', 'points_api_earn_for_action'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.points_earn_for_action(text, text, text, timestamptz) IS
	'Earn the points of an action (review, referral, signup, birthday, ...) by its active rules; SQLSTATE LP004 when no rule names the action; idempotent on reference';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.points_earn_for_action(text, text, text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.points_reverse(customer_id text, reference text,
									   at timestamptz DEFAULT pg_catalog.now())
RETURNS loyalty.points_receipt
AS 'MODULE_PATHNAME', 'points_api_reverse'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.points_reverse(text, text, timestamptz) IS
	'Refund: take back the points the customer earned under a reference (clawing back or recording debt when already spent) and return the points spent under it; LP003 if nothing of this customer is under it; idempotent';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.points_reverse(text, text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.points_adjust(customer_id text, reference text, points bigint, reason text,
									  at timestamptz DEFAULT pg_catalog.now(),
									  expires_at timestamptz DEFAULT NULL)
RETURNS loyalty.points_receipt
AS 'MODULE_PATHNAME', 'points_api_adjust'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.points_adjust(text, text, bigint, text, timestamptz, timestamptz) IS
	'Manual correction: credit (points > 0, non-qualifying) or take back (points < 0: available, then pending, then debt); reason required; idempotent on reference';
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.points_adjust(text, text, bigint, text, timestamptz, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * The PL/pgSQL calls of points_coupon.sql under their new names: a call of
 * the old function with the arguments in its order, nothing else (errors
 * are the old function's, whose messages name the arguments as these do).
 */
CREATE FUNCTION loyalty.points_exchange(customer_id text, reference text, campaign_id bigint,
										at timestamptz DEFAULT pg_catalog.now(),
										OUT code text, OUT points bigint, OUT available bigint)
RETURNS record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	SELECT e.code, e.points, e.available INTO code, points, available
	FROM loyalty.exchange_points(points_exchange.customer_id, points_exchange.campaign_id,
								 points_exchange.reference, points_exchange.at) e;
END;
$$;

COMMENT ON FUNCTION loyalty.points_exchange(text, text, bigint, timestamptz) IS
	'Spend the points a campaign''s coupon costs (loyalty.points_reward) and issue a single-use code bound to the customer; idempotent on reference; LP001 short, LP007 not offered, LP008 campaign paused or ended, LP009 cap reached (nothing spent)';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.points_exchange(text, text, bigint, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.points_earn_coupon_bonus(customer_id text, order_ref text,
												 at timestamptz DEFAULT pg_catalog.now())
RETURNS loyalty.points_receipt
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN loyalty.earn_coupon_bonus(points_earn_coupon_bonus.customer_id,
									 points_earn_coupon_bonus.order_ref,
									 points_earn_coupon_bonus.at);
END;
$$;

COMMENT ON FUNCTION loyalty.points_earn_coupon_bonus(text, text, timestamptz) IS
	'Credit the bonus points (loyalty.coupon_bonus) of the coupons an order redeemed, under reference <order_ref>:coupon-bonus; NULL when none earns a bonus';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.points_earn_coupon_bonus(text, text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* the old names: deprecated, same behaviour (doc/api.md has the mapping) */

COMMENT ON FUNCTION loyalty.earn_points(text, bigint, text, text, timestamptz, timestamptz, boolean, timestamptz) IS
	'Deprecated since 0.3.0, use loyalty.points_earn(customer_id, reference, points, at => ..., reason => ..., pending_until => ..., expires_at => ..., qualifying => ...); removed in 0.4.0';
COMMENT ON FUNCTION loyalty.spend_points(text, bigint, text, timestamptz) IS
	'Deprecated since 0.3.0, use loyalty.points_spend(customer_id, reference, points, at => ...); removed in 0.4.0';
COMMENT ON FUNCTION loyalty.earn_for_order(text, text, numeric, text, timestamptz) IS
	'Deprecated since 0.3.0, use loyalty.points_earn_for_order(customer_id, reference, amount, at => ..., currency => ...); removed in 0.4.0';
COMMENT ON FUNCTION loyalty.earn_for_action(text, text, text, timestamptz) IS
	'Deprecated since 0.3.0, use loyalty.points_earn_for_action(customer_id, reference, action, at => ...); removed in 0.4.0';
COMMENT ON FUNCTION loyalty.reverse_points(text, text, timestamptz) IS
	'Deprecated since 0.3.0, use loyalty.points_reverse(customer_id, reference, at => ...) (customer_id required); removed in 0.4.0';
COMMENT ON FUNCTION loyalty.adjust_points(text, bigint, text, text, timestamptz, timestamptz) IS
	'Deprecated since 0.3.0, use loyalty.points_adjust(customer_id, reference, points, reason, at => ..., expires_at => ...); removed in 0.4.0';
COMMENT ON FUNCTION loyalty.exchange_points(text, bigint, text, timestamptz) IS
	'Deprecated since 0.3.0, use loyalty.points_exchange(customer_id, reference, campaign_id, at => ...); removed in 0.4.0';
COMMENT ON FUNCTION loyalty.earn_coupon_bonus(text, text, timestamptz) IS
	'Deprecated since 0.3.0, use loyalty.points_earn_coupon_bonus(customer_id, order_ref, at => ...); removed in 0.4.0';

-- End of issue 13, One API (item 7).

/* ---------------------------------------------------------------------------
 * Issue 13, coupons: the failure contract (C only: DETAIL as one JSON
 * object, codes as printed, LY023 / LY024), date-only campaign ends
 * (campaign.ends_on, inclusive in the program time zone), checkout changes
 * (coupon_update_order, coupon_release, discounts per order line,
 * coupon_order_lines, partial returns with coupon_return_lines).
 * ------------------------------------------------------------------------ */
ALTER TABLE loyalty.campaign ADD COLUMN ends_on date;
COMMENT ON COLUMN loyalty.campaign.ends_on IS
	'Date-only end: the campaign runs through this day in the program time zone (loyalty.settings); ends_at then holds that day''s end as of the zone when it was set';

DROP TRIGGER campaign_config_changed ON loyalty.campaign;
-- every column but the cap counter "uses", which redemptions update
CREATE TRIGGER campaign_config_changed
	AFTER UPDATE OF campaign_id, name, kind, currency, percent_off, max_discount,
		amount_off, buy_quantity, get_quantity, free_sku, free_quantity,
		starts_at, ends_at, paused, paused_at, total_cap, per_customer_cap,
		min_order_amount, include_skus, exclude_skus, include_categories,
		exclude_categories, exclusive, max_coupons_per_order, created_at,
		updated_at, ends_on
	ON loyalty.campaign
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._campaign_changed();

/*
 * The end of a date-only campaign end (ends_on): the start of the next day
 * in the program time zone (loyalty.settings, no row: UTC), so the campaign
 * runs through that whole day there.  The lifecycle computes it again at
 * every call (a change of the zone applies at once); create_campaign and
 * update_campaign store it in ends_at for readers of the table.
 */
CREATE FUNCTION loyalty._campaign_day_end(day date)
RETURNS timestamptz
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT pg_catalog.timezone(coalesce((SELECT s.timezone FROM loyalty.settings s), 'UTC'::pg_catalog.text),
							   $1::pg_catalog.timestamp OPERATOR(pg_catalog.+) '1 day'::pg_catalog.interval)
$$;

COMMENT ON FUNCTION loyalty._campaign_day_end(date) IS
	'Internal: when a campaign ending on this day (ends_on) ends: the next midnight in the program time zone';

DROP FUNCTION loyalty.create_campaign(text, text, numeric, numeric, numeric, integer, integer, text, integer, text, timestamptz, timestamptz, bigint, integer, numeric, text[], text[], text[], text[], boolean, integer, text[], boolean, boolean);
DELETE FROM loyalty.access_rule r
WHERE r.object_type = 'function'
  AND r.object_name = 'loyalty.create_campaign(text,text,numeric,numeric,numeric,integer,integer,text,integer,text,timestamp with time zone,timestamp with time zone,bigint,integer,numeric,text[],text[],text[],text[],boolean,integer,text[],boolean,boolean)';

CREATE FUNCTION loyalty.create_campaign(
	name text,
	kind text,
	percent_off numeric DEFAULT NULL,
	max_discount numeric DEFAULT NULL,
	amount_off numeric DEFAULT NULL,
	buy_quantity integer DEFAULT NULL,
	get_quantity integer DEFAULT NULL,
	free_sku text DEFAULT NULL,
	free_quantity integer DEFAULT NULL,
	currency text DEFAULT 'EUR',
	starts_at timestamptz DEFAULT NULL,
	ends_at timestamptz DEFAULT NULL,
	total_cap bigint DEFAULT NULL,
	per_customer_cap integer DEFAULT NULL,
	min_order_amount numeric DEFAULT NULL,
	include_skus text[] DEFAULT NULL,
	exclude_skus text[] DEFAULT NULL,
	include_categories text[] DEFAULT NULL,
	exclude_categories text[] DEFAULT NULL,
	exclusive boolean DEFAULT false,
	max_coupons_per_order integer DEFAULT NULL,
	segments text[] DEFAULT NULL,
	new_customers_only boolean DEFAULT false,
	paused boolean DEFAULT false,
	ends_on date DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c loyalty.campaign;
	id bigint;
BEGIN
	c.name := create_campaign.name;
	c.kind := create_campaign.kind;
	c.currency := create_campaign.currency;
	c.percent_off := create_campaign.percent_off;
	c.max_discount := create_campaign.max_discount;
	c.amount_off := create_campaign.amount_off;
	c.buy_quantity := create_campaign.buy_quantity;
	c.get_quantity := create_campaign.get_quantity;
	c.free_sku := create_campaign.free_sku;
	c.free_quantity := CASE WHEN create_campaign.kind = 'free_item'
							THEN coalesce(create_campaign.free_quantity, 1)
							ELSE create_campaign.free_quantity END;
	c.starts_at := create_campaign.starts_at;
	IF create_campaign.ends_at IS NOT NULL AND create_campaign.ends_on IS NOT NULL THEN
		RAISE EXCEPTION 'invalid campaign: give ends_at (an instant) or ends_on (a date, inclusive), not both'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	c.ends_on := create_campaign.ends_on;
	c.ends_at := coalesce(create_campaign.ends_at, loyalty._campaign_day_end(create_campaign.ends_on));
	c.total_cap := create_campaign.total_cap;
	c.per_customer_cap := create_campaign.per_customer_cap;
	c.min_order_amount := create_campaign.min_order_amount;
	c.include_skus := create_campaign.include_skus;
	c.exclude_skus := create_campaign.exclude_skus;
	c.include_categories := create_campaign.include_categories;
	c.exclude_categories := create_campaign.exclude_categories;
	c.exclusive := create_campaign.exclusive;
	c.max_coupons_per_order := create_campaign.max_coupons_per_order;
	PERFORM loyalty._campaign_check(c);
	IF EXISTS (SELECT 1 FROM loyalty.campaign t WHERE t.name = c.name) THEN
		RAISE EXCEPTION 'campaign "%" already exists', c.name
			USING ERRCODE = 'unique_violation';
	END IF;
	IF create_campaign.paused IS NULL OR new_customers_only IS NULL THEN
		RAISE EXCEPTION 'invalid campaign: paused and new_customers_only must be true or false'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;

	INSERT INTO loyalty.campaign AS t
		(name, kind, currency, percent_off, max_discount, amount_off,
		 buy_quantity, get_quantity, free_sku, free_quantity, starts_at, ends_at,
		 paused, paused_at, total_cap, per_customer_cap, min_order_amount,
		 include_skus, exclude_skus, include_categories, exclude_categories,
		 exclusive, max_coupons_per_order, ends_on)
	VALUES (c.name, c.kind, c.currency, c.percent_off, c.max_discount, c.amount_off,
			c.buy_quantity, c.get_quantity, c.free_sku, c.free_quantity,
			c.starts_at, c.ends_at, create_campaign.paused,
			CASE WHEN create_campaign.paused THEN now() END,
			c.total_cap, c.per_customer_cap, c.min_order_amount,
			c.include_skus, c.exclude_skus, c.include_categories,
			c.exclude_categories, c.exclusive, c.max_coupons_per_order, c.ends_on)
	RETURNING t.campaign_id INTO id;

	IF segments IS NOT NULL THEN
		PERFORM loyalty.add_campaign_rule(id, 'segment',
										  jsonb_build_object('segments', to_jsonb(segments)));
	END IF;
	IF new_customers_only THEN
		PERFORM loyalty.add_campaign_rule(id, 'new_customer', '{"new": true}');
	END IF;
	RETURN id;
END;
$$;

COMMENT ON FUNCTION loyalty.create_campaign(text, text, numeric, numeric, numeric, integer, integer, text, integer, text, timestamptz, timestamptz, bigint, integer, numeric, text[], text[], text[], text[], boolean, integer, text[], boolean, boolean, date) IS
	'Create a coupon campaign (use named arguments); returns its id. ends_at is an instant (exclusive); ends_on a date, the campaign running through that day in the program time zone';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.create_campaign(text, text, numeric, numeric, numeric, integer, integer, text, integer, text, timestamptz, timestamptz, bigint, integer, numeric, text[], text[], text[], text[], boolean, integer, text[], boolean, boolean, date)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE OR REPLACE FUNCTION loyalty.update_campaign(campaign_id bigint, changes jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c loyalty.campaign;
	n loyalty.campaign;
	bad text;
BEGIN
	IF campaign_id IS NULL OR changes IS NULL THEN
		RAISE EXCEPTION 'campaign_id and changes must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF jsonb_typeof(changes) <> 'object' THEN
		RAISE EXCEPTION 'changes must be a JSON object'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT string_agg(k, ', ' ORDER BY k) INTO bad
	FROM jsonb_object_keys(changes) AS k
	WHERE k NOT IN ('name', 'percent_off', 'max_discount', 'amount_off',
					'buy_quantity', 'get_quantity', 'free_sku', 'free_quantity',
					'starts_at', 'ends_at', 'ends_on', 'total_cap', 'per_customer_cap',
					'min_order_amount', 'include_skus', 'exclude_skus',
					'include_categories', 'exclude_categories', 'exclusive',
					'max_coupons_per_order');
	IF bad IS NOT NULL THEN
		RAISE EXCEPTION 'cannot change campaign field(s): %', bad
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'kind and currency are fixed; use pause_campaign / resume_campaign for the pause switch.';
	END IF;

	PERFORM loyalty._campaign_gate(update_campaign.campaign_id);
	SELECT * INTO c FROM loyalty.campaign t
	WHERE t.campaign_id = update_campaign.campaign_id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'campaign % does not exist', update_campaign.campaign_id
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	n := jsonb_populate_record(c, changes);
	-- ends_at (an instant) and ends_on (a date) replace each other
	IF changes ? 'ends_on' AND changes ? 'ends_at'
	   AND n.ends_on IS NOT NULL AND n.ends_at IS NOT NULL THEN
		RAISE EXCEPTION 'invalid campaign: give ends_at (an instant) or ends_on (a date, inclusive), not both'
			USING ERRCODE = 'invalid_parameter_value';
	ELSIF changes ? 'ends_on' AND n.ends_on IS NOT NULL THEN
		n.ends_at := loyalty._campaign_day_end(n.ends_on);
	ELSIF changes ? 'ends_on' AND NOT changes ? 'ends_at' THEN
		n.ends_at := NULL;
	ELSIF changes ? 'ends_at' THEN
		n.ends_on := NULL;
	END IF;
	PERFORM loyalty._campaign_check(n);
	IF n.total_cap IS NOT NULL AND c.total_cap IS NULL THEN
		n.uses := loyalty._campaign_active_uses(c.campaign_id);
	END IF;
	IF n.total_cap IS NOT NULL AND n.uses > n.total_cap THEN
		RAISE EXCEPTION 'invalid campaign: total_cap % is below the % active redemptions',
			n.total_cap, n.uses
			USING ERRCODE = 'invalid_parameter_value';
	END IF;

	UPDATE loyalty.campaign t
	SET name = n.name, percent_off = n.percent_off, max_discount = n.max_discount,
		amount_off = n.amount_off, buy_quantity = n.buy_quantity,
		get_quantity = n.get_quantity, free_sku = n.free_sku,
		free_quantity = n.free_quantity, starts_at = n.starts_at,
		ends_at = n.ends_at, total_cap = n.total_cap,
		per_customer_cap = n.per_customer_cap,
		min_order_amount = n.min_order_amount, include_skus = n.include_skus,
		exclude_skus = n.exclude_skus, include_categories = n.include_categories,
		exclude_categories = n.exclude_categories, exclusive = n.exclusive,
		max_coupons_per_order = n.max_coupons_per_order, uses = n.uses,
		ends_on = n.ends_on, updated_at = now()
	WHERE t.campaign_id = c.campaign_id;
END;
$$;

COMMENT ON FUNCTION loyalty.update_campaign(bigint, jsonb) IS
	'Change campaign fields given as a JSON object (null clears); effective for every redemption that starts after the commit';

CREATE OR REPLACE VIEW loyalty.campaign_stats AS
SELECT c.campaign_id,
	   c.name,
	   c.kind,
	   c.currency,
	   CASE WHEN c.paused THEN 'paused'
			WHEN coalesce(pg_catalog.timezone(coalesce((SELECT s.timezone FROM loyalty.settings s), 'UTC'),
											  c.ends_on::pg_catalog.timestamp OPERATOR(pg_catalog.+) '1 day'::pg_catalog.interval),
						  c.ends_at) <= pg_catalog.now() THEN 'ended'
			WHEN c.starts_at IS NOT NULL AND c.starts_at > pg_catalog.now() THEN 'scheduled'
			ELSE 'active' END AS status,
	   coalesce(k.codes, 0) AS codes,
	   coalesce(r.redemptions, 0) AS redemptions,
	   coalesce(r.rollbacks, 0) AS rollbacks,
	   coalesce(r.redemptions, 0) - coalesce(r.rollbacks, 0) AS active_redemptions,
	   coalesce(r.customers, 0) AS customers,
	   coalesce(r.discount_total, 0) AS discount_total,
	   coalesce(h.active_reservations, 0) AS active_reservations,
	   c.total_cap,
	   CASE WHEN c.total_cap IS NOT NULL THEN
			greatest(c.total_cap - (coalesce(r.redemptions, 0) - coalesce(r.rollbacks, 0))
					 - coalesce(h.active_reservations, 0), 0)
	   END AS remaining_cap
FROM loyalty.campaign c
LEFT JOIN (SELECT campaign_id, count(*) AS codes
		   FROM loyalty.coupon GROUP BY campaign_id) k
	   ON k.campaign_id = c.campaign_id
LEFT JOIN (SELECT campaign_id,
				  count(*) FILTER (WHERE kind = 'redeem') AS redemptions,
				  count(*) FILTER (WHERE kind = 'reversal') AS rollbacks,
				  count(DISTINCT customer_id) FILTER (WHERE kind = 'redeem') AS customers,
				  sum(discount) AS discount_total
		   FROM loyalty.redemption GROUP BY campaign_id) r
	   ON r.campaign_id = c.campaign_id
LEFT JOIN (SELECT campaign_id, count(*) AS active_reservations
		   FROM loyalty.reservation
		   WHERE state = 'held' AND expires_at > pg_catalog.now()
		   GROUP BY campaign_id) h
	   ON h.campaign_id = c.campaign_id;

ALTER TABLE loyalty.coupon_order ADD COLUMN context jsonb;
COMMENT ON COLUMN loyalty.coupon_order.context IS
	'The order context as last given (reserve / redeem / coupon_update_order); its items are the lines of coupon_order_lines and coupon_return_lines; null for a plain amount and for orders recorded by 0.2.0';

ALTER TABLE loyalty.redemption ADD COLUMN line_discounts numeric[];
COMMENT ON TABLE loyalty.redemption IS
	'Redemption ledger (append-only): one redeem row per (order_ref, code), one reversal row per rolled-back redemption, one return row (uses 0, discount taken back, negative) per partial return and code';
COMMENT ON COLUMN loyalty.redemption.line_discounts IS
	'redeem rows: the discount per line of the order context (items in their order, summing exactly to discount); null for a plain amount or a free-shipping discount';

ALTER TABLE loyalty.reservation ADD COLUMN line_discounts numeric[];
COMMENT ON COLUMN loyalty.reservation.line_discounts IS
	'The discount per line of the order context, as for redemption.line_discounts';

/*
 * Partial returns (coupon_return_lines): one row per (order_ref,
 * return_ref) with the returned quantities per line and the coupon discount
 * taken back, and one row per code and line taken back.  The ledger gets a
 * 'return' row per code (loyalty.redemption).  Only coupon_return_lines
 * writes them.  Keyed by customer first, as every per-customer table.
 */
CREATE TABLE loyalty.coupon_return (
	customer_id		text NOT NULL,
	order_ref		text NOT NULL,
	return_ref		text NOT NULL,
	quantities		jsonb NOT NULL,
	amount			numeric NOT NULL,
	created_at		timestamptz NOT NULL,
	PRIMARY KEY (customer_id, order_ref, return_ref)
);

COMMENT ON TABLE loyalty.coupon_return IS
	'Partial returns of orders with coupons: returned quantities per order line ({"line": quantity}) and the coupon discount taken back (amount); a repeat of return_ref returns it';

SELECT pg_catalog.pg_extension_config_dump('loyalty.coupon_return', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.coupon_return'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.coupon_return_line (
	customer_id		text NOT NULL,
	order_ref		text NOT NULL,
	return_ref		text NOT NULL,
	coupon_id		bigint NOT NULL,
	line			integer NOT NULL,
	quantity		bigint NOT NULL,
	discount		numeric NOT NULL,
	PRIMARY KEY (customer_id, order_ref, return_ref, coupon_id, line)
);

COMMENT ON TABLE loyalty.coupon_return_line IS
	'Coupon discount taken back per return, code and order line (discount > 0: the amount taken back)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.coupon_return_line', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.coupon_return_line'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE FUNCTION loyalty.coupon_update_order(customer_id text, order_ref text,
											 order_context jsonb)
RETURNS numeric
AS 'MODULE_PATHNAME', 'coupon_update_context'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.coupon_update_order(text, text, jsonb) IS
	'An open checkout''s cart changed: the order takes the new context and its live reservations are checked again and re-priced (caps unchanged); returns their total discount; LY023 once a coupon of the order is redeemed';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.coupon_update_order(text, text, jsonb)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * Release one reservation of an order, leaving its other coupons alone.
 * Lock order as every lifecycle call: order row, then the coupon row.  A
 * released hold stops counting against the caps at the commit.  A coupon
 * already redeemed for the order is not released (LY022): take its
 * discount back with coupon_return_lines or rollback_redemption.
 */
CREATE FUNCTION loyalty.coupon_release(customer_id text, order_ref text, code text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	o record;
	k record;
BEGIN
	IF customer_id IS NULL OR order_ref IS NULL OR code IS NULL THEN
		RAISE EXCEPTION 'customer_id, order_ref and code must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT t.customer_id, t.state INTO o FROM loyalty.coupon_order t
	WHERE t.order_ref = coupon_release.order_ref FOR NO KEY UPDATE;
	IF NOT FOUND OR o.state = 'rolled_back' THEN
		RETURN false;
	END IF;
	IF o.customer_id <> coupon_release.customer_id THEN
		RAISE EXCEPTION 'coupon cannot be released: order_conflict'
			USING ERRCODE = 'LY020',
				  DETAIL = jsonb_build_object('reason', 'order_conflict', 'code', NULL,
											 'order_ref', coupon_release.order_ref)::text,
				  HINT = 'This order reference was used with another customer.';
	END IF;
	SELECT c.coupon_id, c.code::text AS printed INTO k FROM loyalty.coupon c
	WHERE c.code OPERATOR(loyalty.=) CAST(coupon_release.code AS loyalty.coupon_code)
	FOR NO KEY UPDATE;
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	IF EXISTS (SELECT 1 FROM loyalty.redemption r
			   WHERE r.order_ref = coupon_release.order_ref AND r.coupon_id = k.coupon_id
				 AND r.kind = 'redeem'
				 AND NOT EXISTS (SELECT 1 FROM loyalty.redemption x WHERE x.reverses = r.redemption_id)) THEN
		RAISE EXCEPTION 'coupon % cannot be released: already_redeemed', k.printed
			USING ERRCODE = 'LY022',
				  DETAIL = jsonb_build_object('reason', 'already_redeemed', 'code', k.printed,
											 'order_ref', coupon_release.order_ref)::text,
				  HINT = 'The coupon is redeemed for this order; take its discount back with coupon_return_lines or rollback_redemption.';
	END IF;
	UPDATE loyalty.reservation h SET state = 'released', ended_at = clock_timestamp()
	WHERE h.order_ref = coupon_release.order_ref AND h.coupon_id = k.coupon_id AND h.state = 'held';
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	UPDATE loyalty.coupon_order t SET updated_at = clock_timestamp()
	WHERE t.order_ref = coupon_release.order_ref;
	RETURN true;
END;
$$;

COMMENT ON FUNCTION loyalty.coupon_release(text, text, text) IS
	'Release the reservation of one code of an open order (its other coupons stay); false if the order holds none; LY022 if the code is redeemed for it';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.coupon_release(text, text, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * The coupon discount of an order per line of its context: one row per
 * active redemption or live reservation and line (items in their order,
 * line 1 first), with what partial returns took back.  A coupon without
 * lines (plain amount, free shipping) has one row with line null.
 */
CREATE FUNCTION loyalty.coupon_order_lines(customer_id text, order_ref text)
RETURNS TABLE (code loyalty.coupon_code, state text, line integer, sku text,
			   quantity bigint, discount numeric, returned numeric)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF customer_id IS NULL OR order_ref IS NULL THEN
		RAISE EXCEPTION 'customer_id and order_ref must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	RETURN QUERY
	WITH o AS (
		SELECT t.context FROM loyalty.coupon_order t
		WHERE t.order_ref = coupon_order_lines.order_ref
		  AND t.customer_id = coupon_order_lines.customer_id AND t.state = 'open'),
	a AS (
		SELECT r.coupon_id, 'redeemed'::text AS state, r.discount, r.line_discounts
		FROM loyalty.redemption r
		WHERE r.order_ref = coupon_order_lines.order_ref AND r.kind = 'redeem'
		  AND NOT EXISTS (SELECT 1 FROM loyalty.redemption x WHERE x.reverses = r.redemption_id)
		UNION ALL
		SELECT h.coupon_id, 'reserved', h.discount, h.line_discounts
		FROM loyalty.reservation h
		WHERE h.order_ref = coupon_order_lines.order_ref AND h.state = 'held'
		  AND h.expires_at > clock_timestamp())
	SELECT c.code, a.state, l.n::integer,
		   (o.context -> 'items' -> (l.n::integer - 1)) ->> 'sku',
		   ((o.context -> 'items' -> (l.n::integer - 1)) ->> 'quantity')::bigint,
		   coalesce(l.d, a.discount),
		   coalesce((SELECT sum(rl.discount) FROM loyalty.coupon_return_line rl
					 WHERE rl.customer_id = coupon_order_lines.customer_id
					   AND rl.order_ref = coupon_order_lines.order_ref
					   AND rl.coupon_id = a.coupon_id
					   AND rl.line IS NOT DISTINCT FROM l.n::integer), 0)
	FROM o CROSS JOIN a
	JOIN loyalty.coupon c ON c.coupon_id = a.coupon_id
	CROSS JOIN LATERAL (SELECT u.d, u.n FROM unnest(a.line_discounts) WITH ORDINALITY AS u(d, n)
						UNION ALL
						SELECT NULL::numeric, NULL::bigint WHERE a.line_discounts IS NULL) l
	ORDER BY a.coupon_id, l.n;
END;
$$;

COMMENT ON FUNCTION loyalty.coupon_order_lines(text, text) IS
	'The coupon discount of an open order per code and line of its order context (lines of one code sum exactly to its discount), with what partial returns took back';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.coupon_order_lines(text, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * A partial return: the returned quantities of lines of the order (lines
 * as its context lists them: [{"line": 2, "quantity": 1}], or "sku" when
 * exactly one line has it) take back the matching part of each redeemed
 * coupon's discount on those lines, proportionally:
 *	taken back so far on a line = round(line discount * units returned so
 *	far / units of the line), half up to the currency's minor units,
 * so that returning every unit, in any number of returns, takes back
 * exactly the line's discount.  Recorded in coupon_return,
 * coupon_return_line and as one 'return' row per code in the redemption
 * ledger (uses 0: a partial return gives no use back; rollback_redemption
 * does).  Idempotent on (order_ref, return_ref): a repeat with the same
 * lines returns the first amount, other lines raise LY024.  A
 * free-shipping or plain-amount discount has no lines and is not touched.
 */
CREATE FUNCTION loyalty.coupon_return_lines(customer_id text, order_ref text,
											return_ref text, lines jsonb)
RETURNS numeric
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	o record;
	req jsonb;
	prev record;
	items jsonb;
	nitems integer;
	total numeric := 0;
	red record;
	taken numeric;
	now_ts timestamptz := clock_timestamp();
BEGIN
	IF customer_id IS NULL OR order_ref IS NULL OR return_ref IS NULL OR lines IS NULL THEN
		RAISE EXCEPTION 'customer_id, order_ref, return_ref and lines must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF octet_length(return_ref) NOT BETWEEN 1 AND 256 OR octet_length(order_ref) NOT BETWEEN 1 AND 256
	   OR octet_length(customer_id) NOT BETWEEN 1 AND 256 THEN
		RAISE EXCEPTION 'invalid customer_id, order_ref or return_ref'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Each must have 1 to 256 bytes.';
	END IF;
	SELECT t.customer_id, t.state, t.context INTO o FROM loyalty.coupon_order t
	WHERE t.order_ref = coupon_return_lines.order_ref FOR NO KEY UPDATE;
	IF NOT FOUND OR o.customer_id <> coupon_return_lines.customer_id THEN
		RAISE EXCEPTION 'order % of customer % has no coupons', order_ref, customer_id
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	items := o.context -> 'items';
	IF jsonb_typeof(items) IS DISTINCT FROM 'array' THEN
		RAISE EXCEPTION 'order % has no lines', order_ref
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Its order context has no "items" (a plain amount, or an order recorded by 0.2.0).';
	END IF;
	nitems := jsonb_array_length(items);
	IF jsonb_typeof(lines) <> 'array' OR jsonb_array_length(lines) = 0 THEN
		RAISE EXCEPTION 'invalid return lines'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'lines must be a non-empty JSON array of {"line": n, "quantity": q} (or "sku" instead of "line").';
	END IF;

	-- the request as {"line": quantity}, checked
	IF EXISTS (SELECT 1 FROM jsonb_array_elements(lines) e
			   WHERE jsonb_typeof(e) <> 'object'
				  OR NOT CASE
						 WHEN e ? 'line' THEN
							 jsonb_typeof(e -> 'line') = 'number'
							 AND (e ->> 'line')::numeric BETWEEN 1 AND nitems
							 AND (e ->> 'line')::numeric = trunc((e ->> 'line')::numeric)
						 ELSE
							 jsonb_typeof(e -> 'sku') = 'string'
							 AND (SELECT count(*) FROM jsonb_array_elements(items) i
								  WHERE i ->> 'sku' = e ->> 'sku') = 1
						 END
				  OR NOT coalesce(jsonb_typeof(e -> 'quantity') = 'number'
								  AND (e ->> 'quantity')::numeric BETWEEN 1 AND 1000000
								  AND (e ->> 'quantity')::numeric = trunc((e ->> 'quantity')::numeric), false)) THEN
		RAISE EXCEPTION 'invalid return lines'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('Each element needs "line" (1 to %s) or a "sku" that exactly one line has, and a whole "quantity" of at least 1.', nitems);
	END IF;
	SELECT jsonb_object_agg(q.line, q.quantity ORDER BY q.line) INTO req
	FROM (SELECT r.line, sum(r.quantity) AS quantity
		  FROM (SELECT CASE WHEN e ? 'line' THEN (e ->> 'line')::integer
							ELSE (SELECT i.n::integer FROM jsonb_array_elements(items) WITH ORDINALITY i(v, n)
								  WHERE i.v ->> 'sku' = e ->> 'sku')
					   END AS line,
					   (e ->> 'quantity')::bigint AS quantity
				FROM jsonb_array_elements(lines) e) r
		  GROUP BY r.line) q;

	-- a repeat of the return
	SELECT r.quantities, r.amount INTO prev FROM loyalty.coupon_return r
	WHERE r.customer_id = coupon_return_lines.customer_id
	  AND r.order_ref = coupon_return_lines.order_ref AND r.return_ref = coupon_return_lines.return_ref;
	IF FOUND THEN
		IF prev.quantities = req THEN
			RETURN prev.amount;
		END IF;
		RAISE EXCEPTION 'return % of order % cannot be recorded: return_conflict', return_ref, order_ref
			USING ERRCODE = 'LY024',
				  DETAIL = jsonb_build_object('reason', 'return_conflict', 'order_ref', order_ref,
											 'return_ref', return_ref)::text,
				  HINT = 'This return reference was used for other lines of the order.';
	END IF;
	IF o.state = 'rolled_back' THEN
		RAISE EXCEPTION 'order % cannot take a return: order_rolled_back', order_ref
			USING ERRCODE = 'LY021',
				  DETAIL = jsonb_build_object('reason', 'order_rolled_back', 'code', NULL,
											 'order_ref', order_ref)::text,
				  HINT = 'This order was rolled back; its whole discount was given back.';
	END IF;

	-- never more units back than the line has
	PERFORM 1 FROM jsonb_each_text(req) j
	WHERE j.value::bigint + coalesce((SELECT sum((r.quantities ->> j.key)::bigint) FROM loyalty.coupon_return r
									  WHERE r.customer_id = coupon_return_lines.customer_id
										AND r.order_ref = coupon_return_lines.order_ref), 0)
		  > ((items -> (j.key::integer - 1)) ->> 'quantity')::bigint;
	IF FOUND THEN
		RAISE EXCEPTION 'invalid return lines'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'More units would be returned than a line of the order has.';
	END IF;

	INSERT INTO loyalty.coupon_return (customer_id, order_ref, return_ref, quantities, amount, created_at)
	VALUES (customer_id, order_ref, return_ref, req, 0, now_ts);

	FOR red IN
		SELECT r.coupon_id, r.campaign_id, r.currency, r.line_discounts
		FROM loyalty.redemption r
		WHERE r.order_ref = coupon_return_lines.order_ref AND r.kind = 'redeem'
		  AND r.line_discounts IS NOT NULL
		  AND NOT EXISTS (SELECT 1 FROM loyalty.redemption x WHERE x.reverses = r.redemption_id)
		ORDER BY r.coupon_id
	LOOP
		INSERT INTO loyalty.coupon_return_line (customer_id, order_ref, return_ref, coupon_id, line, quantity, discount)
		SELECT customer_id, order_ref, return_ref, red.coupon_id, x.line, x.quantity, x.taken
		FROM (SELECT j.key::integer AS line, j.value::bigint AS quantity,
					 round(red.line_discounts[j.key::integer] * (p.before + j.value::bigint)
						   / ((items -> (j.key::integer - 1)) ->> 'quantity')::bigint,
						   loyalty.currency_decimals(red.currency))
					 - round(red.line_discounts[j.key::integer] * p.before
							 / ((items -> (j.key::integer - 1)) ->> 'quantity')::bigint,
							 loyalty.currency_decimals(red.currency)) AS taken
			  FROM jsonb_each_text(req) j
			  CROSS JOIN LATERAL (SELECT coalesce(sum((r.quantities ->> j.key)::bigint), 0) AS before
								  FROM loyalty.coupon_return r
								  WHERE r.customer_id = coupon_return_lines.customer_id
									AND r.order_ref = coupon_return_lines.order_ref
									AND r.return_ref <> coupon_return_lines.return_ref) p) x
		WHERE x.taken > 0;
		SELECT coalesce(sum(rl.discount), 0) INTO taken FROM loyalty.coupon_return_line rl
		WHERE rl.customer_id = coupon_return_lines.customer_id
		  AND rl.order_ref = coupon_return_lines.order_ref AND rl.return_ref = coupon_return_lines.return_ref
		  AND rl.coupon_id = red.coupon_id;
		IF taken > 0 THEN
			INSERT INTO loyalty.redemption (kind, coupon_id, campaign_id, customer_id, order_ref,
											uses, discount, on_shipping, currency, created_at)
			VALUES ('return', red.coupon_id, red.campaign_id, customer_id, order_ref,
					0, -taken, false, red.currency, now_ts);
			total := total + taken;
		END IF;
	END LOOP;
	UPDATE loyalty.coupon_return r SET amount = total
	WHERE r.customer_id = coupon_return_lines.customer_id
	  AND r.order_ref = coupon_return_lines.order_ref AND r.return_ref = coupon_return_lines.return_ref;
	UPDATE loyalty.coupon_order t SET updated_at = now_ts WHERE t.order_ref = coupon_return_lines.order_ref;
	RETURN total;
END;
$$;

COMMENT ON FUNCTION loyalty.coupon_return_lines(text, text, text, jsonb) IS
	'Partial return: take back the coupon discount of the returned units of order lines, proportionally (exact, half up per line on the cumulative units); idempotent on (order_ref, return_ref); returns the amount taken back';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.coupon_return_lines(text, text, text, jsonb)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* ---------------------------------------------------------------------------
 * Issue 13, RFM semantics (items 1 to 6): rfm_segmentation and track_orders
 * gain a frequency unit (rows, distinct orders / days); tracked tables
 * record the zone of their day buckets and their frequency unit (0.2.0
 * tracked in UTC days and counted rows: the column defaults say exactly
 * that, so existing trackings keep their meaning; refresh_segments asks
 * for rebuild_tracking when the program zone carried over from
 * points_program is another); refresh_segments defaults to the start of
 * the day in the program zone; drop_snapshot; rfm_stats aggregates over
 * a timestamp column (read in the program zone, not through the session's
 * implicit cast).  Items 1, 3 and the zone arithmetic are C only.
 * ------------------------------------------------------------------------ */
DELETE FROM loyalty.access_rule
WHERE object_type OPERATOR(pg_catalog.=) 'function'::pg_catalog.text
  AND (object_name OPERATOR(pg_catalog.~~) 'loyalty.rfm_segmentation(%'::pg_catalog.text
	   OR object_name OPERATOR(pg_catalog.~~) 'loyalty.track_orders(%'::pg_catalog.text);
DROP FUNCTION loyalty.rfm_segmentation(regclass, name, name, name, timestamptz, integer, interval, text, integer[], bigint[], numeric[]);
DROP FUNCTION loyalty.track_orders(regclass, name, name, name, name, text[]);

/*
 * Scores and names every customer of an orders table or view: one scan run
 * with the caller's rights (SECURITY INVOKER: the caller must be able to read
 * the columns), one row per customer having a row dated up to as_of.
 * Quantile scoring by default; threshold arrays (bins - 1 ascending cut
 * points each) switch their dimension to fixed business thresholds.
 * frequency_unit: 'rows' counts order rows, 'orders' distinct values of
 * order_column (a line-level table), 'days' distinct days with an order in
 * the program time zone.  Rows without customer or time are ignored and
 * counted in a NOTICE.  A customer without an order in the window scores
 * 111 (rfm.h).  PARALLEL RESTRICTED: the relation may be a temporary table.
 */
CREATE FUNCTION loyalty.rfm_segmentation(
	orders regclass,
	customer_column name,
	ordered_at_column name,
	amount_column name,
	as_of timestamptz DEFAULT pg_catalog.now(),
	bins integer DEFAULT 5,
	window_length interval DEFAULT '12 months',
	monetary_mode text DEFAULT 'total',
	recency_thresholds integer[] DEFAULT NULL,
	frequency_thresholds bigint[] DEFAULT NULL,
	monetary_thresholds numeric[] DEFAULT NULL,
	frequency_unit text DEFAULT 'rows',
	order_column name DEFAULT NULL)
RETURNS TABLE (
	customer_id text,
	last_order timestamptz,
	recency_days integer,
	frequency bigint,
	monetary numeric,
	score loyalty.rfm_score,
	segment text)
AS 'MODULE_PATHNAME', 'rfm_segmentation'
LANGUAGE C STABLE PARALLEL RESTRICTED;

COMMENT ON FUNCTION loyalty.rfm_segmentation(regclass, name, name, name, timestamptz, integer, interval, text, integer[], bigint[], numeric[], text, name) IS
	'RFM score and segment of every customer of an orders table or view as of a time (quantiles, or thresholds per dimension; frequency counts rows, distinct orders or distinct days)';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_segmentation(regclass, name, name, name, timestamptz, integer, interval, text, integer[], bigint[], numeric[], text, name)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* rfm_stats over a timestamp column: local times of the program zone */
CREATE FUNCTION loyalty._rfm_stats_trans(internal, timestamp, numeric, timestamptz)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, timestamp, numeric, timestamptz) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, timestamp, numeric, timestamptz, interval)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, timestamp, numeric, timestamptz, interval) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, timestamp, bigint, timestamptz)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, timestamp, bigint, timestamptz) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, timestamp, bigint, timestamptz, interval)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, timestamp, bigint, timestamptz, interval) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, timestamp, integer, timestamptz)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, timestamp, integer, timestamptz) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, timestamp, integer, timestamptz, interval)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, timestamp, integer, timestamptz, interval) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, timestamp, double precision, timestamptz)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, timestamp, double precision, timestamptz) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, timestamp, double precision, timestamptz, interval)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, timestamp, double precision, timestamptz, interval) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE AGGREGATE loyalty.rfm_stats(ordered_at timestamp, amount numeric, as_of timestamptz) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(timestamp, numeric, timestamptz) IS
	'One customer''s RFM statistics as of as_of over a window of 12 months; order times are local times of the program time zone; numeric amounts summed exactly';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(timestamp, numeric, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at timestamp, amount numeric, as_of timestamptz, window_length interval) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(timestamp, numeric, timestamptz, interval) IS
	'One customer''s RFM statistics as of as_of over a window of window_length; order times are local times of the program time zone; numeric amounts summed exactly';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(timestamp, numeric, timestamptz, interval)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at timestamp, amount bigint, as_of timestamptz) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(timestamp, bigint, timestamptz) IS
	'One customer''s RFM statistics as of as_of over a window of 12 months; order times are local times of the program time zone; bigint amounts summed exactly';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(timestamp, bigint, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at timestamp, amount bigint, as_of timestamptz, window_length interval) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(timestamp, bigint, timestamptz, interval) IS
	'One customer''s RFM statistics as of as_of over a window of window_length; order times are local times of the program time zone; bigint amounts summed exactly';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(timestamp, bigint, timestamptz, interval)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at timestamp, amount integer, as_of timestamptz) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(timestamp, integer, timestamptz) IS
	'One customer''s RFM statistics as of as_of over a window of 12 months; order times are local times of the program time zone; integer amounts summed exactly';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(timestamp, integer, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at timestamp, amount integer, as_of timestamptz, window_length interval) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(timestamp, integer, timestamptz, interval) IS
	'One customer''s RFM statistics as of as_of over a window of window_length; order times are local times of the program time zone; integer amounts summed exactly';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(timestamp, integer, timestamptz, interval)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at timestamp, amount double precision, as_of timestamptz) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(timestamp, double precision, timestamptz) IS
	'One customer''s RFM statistics as of as_of over a window of 12 months; order times are local times of the program time zone; double precision amounts summed as double precision';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(timestamp, double precision, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at timestamp, amount double precision, as_of timestamptz, window_length interval) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(timestamp, double precision, timestamptz, interval) IS
	'One customer''s RFM statistics as of as_of over a window of window_length; order times are local times of the program time zone; double precision amounts summed as double precision';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(timestamp, double precision, timestamptz, interval)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* day buckets are days of the tracking time zone, no longer UTC days */
COMMENT ON TYPE loyalty.day_buckets IS
	'One customer''s orders and spend per day of the tracking time zone (live RFM statistics)';
COMMENT ON FUNCTION loyalty.day_buckets_entries(loyalty.day_buckets) IS
	'The buckets of a day_buckets value as rows: day (of the tracking time zone), orders and spend of that day';
COMMENT ON COLUMN loyalty.customer_stats.days IS
	'Orders and spend per day of the tracking time zone (loyalty.tracked_table.timezone), from the retention horizon on';
COMMENT ON COLUMN loyalty.customer_stats_delta.days IS
	'Net change of orders and spend per day (tracking time zone) made by one statement, for the days whose order count did not fall';
COMMENT ON COLUMN loyalty.customer_stats_delta.days_removed IS
	'Opposite of the net change per day (tracking time zone) made by one statement, for the days whose order count fell (stored buckets never hold negative counts)';
COMMENT ON COLUMN loyalty.rfm_config.scoring_window IS
	'Frequency and monetary count the orders of [as_of - scoring_window, as_of], whole days of the tracking time zone';

ALTER TABLE loyalty.tracked_table
	ADD COLUMN timezone text NOT NULL DEFAULT 'UTC',
	ADD COLUMN frequency_unit text NOT NULL DEFAULT 'rows'
		CONSTRAINT tracked_table_frequency_unit_check
		CHECK (frequency_unit IN ('rows', 'days'));

COMMENT ON COLUMN loyalty.tracked_table.timezone IS
	'Time zone of the day buckets: the program time zone (loyalty.settings) at track_orders or the last rebuild_tracking; refresh_segments refuses to run while they differ';
COMMENT ON COLUMN loyalty.tracked_table.frequency_unit IS
	'What frequency counts: rows (every order row) or days (days with an order, for a line-level table); the same for every tracked table';

CREATE FUNCTION loyalty.track_orders(
	orders regclass,
	customer_column name,
	ordered_at_column name,
	amount_column name,
	status_column name DEFAULT NULL,
	counted_statuses text[] DEFAULT NULL,
	frequency_unit text DEFAULT 'rows',
	OUT tracked_rows bigint,
	OUT customers bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'rfm_track_orders'
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.track_orders(regclass, name, name, name, name, text[], text) IS
	'Keep live RFM statistics of an orders table: back-fill them now and install triggers that keep them exact (optionally counting only rows whose status is in counted_statuses; frequency in rows or days)';
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.track_orders(regclass,name,name,name,name,text[],text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty._rfm_default_as_of()
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'rfm_default_as_of'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_default_as_of() IS
	'Internal: the default as_of of refresh_segments, the start of today in the program time zone';
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty._rfm_default_as_of()'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE OR REPLACE FUNCTION loyalty.refresh_segments(
	as_of timestamptz DEFAULT loyalty._rfm_default_as_of(),
	OUT snapshot_id bigint,
	OUT scored_as_of timestamptz,
	OUT customers bigint,
	OUT segment_changes bigint,
	OUT score_changes bigint,
	OUT left_customers bigint,
	OUT took_ms double precision)
RETURNS record
AS 'MODULE_PATHNAME', 'rfm_refresh_segments'
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.refresh_segments(timestamptz) IS
	'Rescore every tracked customer from the live statistics (never reading orders) and record a snapshot as of as_of (default: the start of today in the program time zone)';

/*
 * Drop the last snapshot taken (a mistaken refresh): its change log rows,
 * summary and header; the customers it moved get back the segment, score
 * and since of the snapshot before (customers it recorded as leaving get
 * their statistics row back, empty, so that the next refresh records them
 * leaving again).  Only the last snapshot: every later one reads the
 * change log up to it.  The retention horizon it reached is kept (given
 * to the snapshot before), since day buckets before it may be pruned.
 * Scores that changed without a segment change keep the dropped value
 * until the next refresh.  Serialized with refresh_segments.
 */
CREATE FUNCTION loyalty.drop_snapshot(snapshot_id bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	d loyalty.segment_snapshot;
	last_id bigint;
	prev_id bigint;
	restored bigint;
BEGIN
	IF drop_snapshot.snapshot_id IS NULL THEN
		RAISE EXCEPTION 'snapshot_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	LOCK TABLE loyalty.segment_snapshot IN EXCLUSIVE MODE;
	SELECT * INTO d FROM loyalty.segment_snapshot s
	WHERE s.snapshot_id OPERATOR(pg_catalog.=) drop_snapshot.snapshot_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'snapshot % does not exist', drop_snapshot.snapshot_id
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'loyalty.segment_snapshots lists the snapshots taken by refresh_segments().';
	END IF;
	SELECT pg_catalog.max(s.snapshot_id) INTO last_id FROM loyalty.segment_snapshot s;
	IF last_id OPERATOR(pg_catalog.<>) d.snapshot_id THEN
		RAISE EXCEPTION 'only the last snapshot can be dropped'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = pg_catalog.format('Snapshot %s was taken after snapshot %s.', last_id, d.snapshot_id),
				  HINT = 'Drop the later snapshots first.';
	END IF;
	SELECT pg_catalog.max(s.snapshot_id) INTO prev_id FROM loyalty.segment_snapshot s
	WHERE s.snapshot_id OPERATOR(pg_catalog.<) d.snapshot_id;

	/*
	 * Each customer the snapshot moved, with their previous change: rows
	 * back to it; leavers it recorded (their row was deleted) back, empty.
	 */
	WITH moves AS (
		SELECT c.customer_id, c.segment AS dropped_segment, p.segment, p.score, p.as_of
		FROM loyalty.segment_change c
		LEFT JOIN LATERAL (
			SELECT x.segment, x.score, s.as_of
			FROM loyalty.segment_change x
			JOIN loyalty.segment_snapshot s ON s.snapshot_id OPERATOR(pg_catalog.=) x.snapshot_id
			WHERE x.customer_id OPERATOR(pg_catalog.=) c.customer_id
			  AND x.snapshot_id OPERATOR(pg_catalog.<) c.snapshot_id
			ORDER BY x.snapshot_id DESC LIMIT 1) p ON true
		WHERE c.snapshot_id OPERATOR(pg_catalog.=) d.snapshot_id
	), upd AS (
		UPDATE loyalty.customer_stats cs
		SET segment = m.segment, score = m.score,
			since = CASE WHEN m.segment IS NULL THEN NULL ELSE m.as_of END
		FROM moves m
		WHERE cs.customer_id OPERATOR(pg_catalog.=) m.customer_id
		RETURNING 1
	), ins AS (
		INSERT INTO loyalty.customer_stats (customer_id, row_count, segment, score, since)
		SELECT m.customer_id, 0, m.segment, m.score, m.as_of
		FROM moves m
		WHERE m.dropped_segment IS NULL AND m.segment IS NOT NULL
		  AND NOT EXISTS (SELECT 1 FROM loyalty.customer_stats cs
						  WHERE cs.customer_id OPERATOR(pg_catalog.=) m.customer_id)
		ON CONFLICT (customer_id) DO NOTHING
		RETURNING 1
	)
	SELECT (SELECT pg_catalog.count(*) FROM upd) OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM ins)
	INTO restored;

	UPDATE loyalty.segment_snapshot s SET retained_from = d.retained_from
	WHERE s.snapshot_id OPERATOR(pg_catalog.=) prev_id
	  AND s.retained_from OPERATOR(pg_catalog.<) d.retained_from;
	DELETE FROM loyalty.segment_change c WHERE c.snapshot_id OPERATOR(pg_catalog.=) d.snapshot_id;
	DELETE FROM loyalty.segment_summary m WHERE m.snapshot_id OPERATOR(pg_catalog.=) d.snapshot_id;
	DELETE FROM loyalty.segment_snapshot s WHERE s.snapshot_id OPERATOR(pg_catalog.=) d.snapshot_id;
	RETURN restored;
END;
$$;

COMMENT ON FUNCTION loyalty.drop_snapshot(bigint) IS
	'Drop the last snapshot taken by refresh_segments (change log, summary, header) and give the customers it moved their previous segment back; returns the customers restored';
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.drop_snapshot(bigint)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * Issue 13, after the RFM semantics: customer_profile counts frequency as
 * the tracking does (tracked_table.frequency_unit, added above); the same
 * columns, so the view is replaced in place and keeps its comments.
 */
CREATE OR REPLACE VIEW loyalty.customer_profile AS
WITH last AS (
	SELECT p.as_of, p.scoring_window, p.monetary
	FROM loyalty.segment_snapshot p
	ORDER BY p.snapshot_id DESC LIMIT 1
), cfg AS MATERIALIZED (
	SELECT l.as_of, l.monetary, z.tz,
		   ((l.as_of AT TIME ZONE z.tz) - l.scoring_window)::date AS start_day,
		   (l.as_of AT TIME ZONE z.tz)::date AS end_day,
		   (SELECT max(p.retained_from) FROM loyalty.segment_snapshot p) AS floor_day,
		   /* frequency as the tracking counts it: rows, or days with an order */
		   EXISTS (SELECT 1 FROM loyalty.tracked_table t WHERE t.frequency_unit = 'days') AS by_days
	FROM last l
	CROSS JOIN (SELECT coalesce((SELECT st.timezone FROM loyalty.settings st), 'UTC') AS tz) z
), rfm AS (
	SELECT s.customer_id, s.first_order, s.last_order, s.order_count, s.spend_total,
		   s.score, s.segment, s.since, c.as_of AS scored_as_of,
		   /* the last order up to as_of, as refresh_segments takes it */
		   CASE WHEN s.score IS NULL OR s.last_order IS NULL THEN NULL
				WHEN s.last_order <= c.as_of THEN s.last_order
				WHEN b.last_day IS NOT NULL AND (c.floor_day IS NULL OR b.last_day >= c.floor_day)
					THEN least(b.last_day::timestamp AT TIME ZONE c.tz, c.as_of)
				WHEN s.first_order <= c.as_of
					THEN greatest(s.first_order, (c.floor_day - 1)::timestamp AT TIME ZONE c.tz)
		   END AS last_up_to,
		   CASE WHEN s.score IS NOT NULL
				THEN CASE WHEN c.by_days THEN coalesce(b.days, 0) ELSE coalesce(b.orders, 0) END
		   END AS frequency,
		   CASE WHEN s.score IS NULL THEN NULL
				WHEN c.monetary = 'average'
					THEN CASE WHEN c.by_days THEN CASE WHEN coalesce(b.days, 0) = 0 THEN 0
													   ELSE b.spend / b.days END
							  WHEN coalesce(b.orders, 0) = 0 THEN 0
							  ELSE b.spend / b.orders END
				ELSE coalesce(b.spend, 0) END AS monetary
	FROM loyalty.customer_stats s
	LEFT JOIN cfg c ON true
	LEFT JOIN LATERAL (
		SELECT sum(e.orders) FILTER (WHERE e.day >= c.start_day) AS orders,
			   count(*) FILTER (WHERE e.day >= c.start_day AND e.orders > 0) AS days,
			   sum(e.spend) FILTER (WHERE e.day >= c.start_day) AS spend,
			   max(e.day) FILTER (WHERE e.orders > 0) AS last_day
		FROM loyalty.day_buckets_entries(s.days) e
		WHERE s.score IS NOT NULL AND e.day <= c.end_day
	) b ON true
), keys AS (
	SELECT r.customer_id, r.first_order, r.last_order, r.order_count, r.spend_total,
		   /* whole days: the day field of the (hour-justified) difference */
		   extract(day FROM r.scored_as_of - r.last_up_to)::integer AS recency_days,
		   r.frequency, r.monetary, r.score, r.segment, r.since,
		   CASE WHEN r.score IS NOT NULL THEN r.scored_as_of END AS scored_as_of
	FROM rfm r
	UNION ALL
	SELECT a.customer_id COLLATE "C", NULL, NULL, NULL, NULL, NULL, NULL, NULL,
		   NULL, NULL, NULL, NULL
	FROM loyalty.points_account a
	WHERE NOT EXISTS (SELECT 1 FROM loyalty.customer_stats s
					  WHERE s.customer_id = a.customer_id COLLATE "C")
)
SELECT k.customer_id,
	   k.last_order,
	   k.recency_days,
	   k.frequency,
	   k.monetary,
	   loyalty.recency(k.score) AS r,
	   loyalty.frequency(k.score) AS f,
	   loyalty.monetary(k.score) AS m,
	   k.score::text AS score,
	   k.segment,
	   k.since AS segment_since,
	   a.tier,
	   coalesce(pts.available, 0)::bigint AS points_available,
	   coalesce(pts.pending, 0)::bigint AS points_pending,
	   a.tier_since,
	   k.first_order,
	   k.order_count AS orders_total,
	   k.spend_total,
	   k.scored_as_of,
	   k.score AS rfm_score
FROM keys k
LEFT JOIN loyalty.points_account a ON a.customer_id = k.customer_id COLLATE "default"
LEFT JOIN LATERAL (
	SELECT sum(l.remaining) FILTER (WHERE l.state = 'available' OR l.available_at <= pg_catalog.now()) AS available,
		   sum(l.remaining) FILTER (WHERE l.state <> 'available'
									AND (l.available_at IS NULL OR l.available_at > pg_catalog.now())) AS pending
	FROM loyalty.points_lot l
	WHERE l.customer_id = a.customer_id
	  AND l.state <> 'closed'
	  AND (l.expires_at IS NULL OR l.expires_at > pg_catalog.now())
) pts ON true;

/* ---------------------------------------------------------------------------
 * Issue 11, restore after an update: a recorded access level is granted
 * when its access_grant row is inserted (common/access.sql), so that the
 * rights this very script re-applies below (recorded by PostgreSQL as the
 * extension's initial privileges, which pg_dump leaves out) come back when
 * a dump of the updated database is restored.
 * ------------------------------------------------------------------------ */
/*
 * A recorded level is granted when its row is inserted, whoever inserts it.
 * This is what brings a role's rights back after pg_dump / pg_restore:
 * the rights reapply_grants() gives inside ALTER EXTENSION UPDATE are
 * recorded by PostgreSQL as the extension's initial privileges (every GRANT
 * an extension script runs is), so pg_dump leaves them out, and CREATE
 * EXTENSION on restore does not give them; the restored access_grant rows
 * then grant them here, outside any extension script, as ordinary
 * privileges.  (grant_access applies the level itself too, for the update
 * of an existing row.)  A role that does not exist is skipped and reported.
 */
CREATE FUNCTION loyalty._access_grant_applied()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = NEW.role_name) THEN
		RAISE WARNING 'role "%" recorded with access level % does not exist', NEW.role_name, NEW.level;
		RETURN NULL;
	END IF;
	PERFORM loyalty._apply_level(NEW.role_name, NEW.level);
	RETURN NULL;
END;
$$;

COMMENT ON FUNCTION loyalty._access_grant_applied() IS
	'Internal: trigger granting a recorded access level when its row is inserted (a restore of loyalty.access_grant gives the rights back)';

CREATE TRIGGER access_grant_applied
	AFTER INSERT ON loyalty.access_grant
	FOR EACH ROW EXECUTE FUNCTION loyalty._access_grant_applied();

COMMENT ON TRIGGER access_grant_applied ON loyalty.access_grant IS
	'Grants a recorded access level when its row is inserted (grant_access, or pg_restore of the table''s rows)';

-- Issue 15, campaign layer: marketing campaigns (audiences, offers, consent,
-- frequency caps, experiments, triggered jobs, outbox), the src/campaign/
-- parts of the install script verbatim.

/* ---------------------------------------------------------------------------
 * campaign.sql: the campaign layer (marketing campaigns) -- tables
 *
 * loyalty.campaign is the COUPON campaign (discount rules, caps, codes).  A
 * marketing campaign (loyalty.marketing_campaign) is what a campaign job
 * runs: an audience (who), an offer (what: a code bound to the customer
 * from a coupon campaign, a public code of a coupon campaign, bonus points,
 * or nothing), a channel, consent and pressure rules, and optionally an
 * experiment (variants with weights and an untreated hold-out).
 *
 * Every audience member a run considers ends in exactly one of two logs,
 * keyed (customer_id, marketing_campaign_id, occurrence):
 *   campaign_publication  the customer was offered something (one row per
 *                         occurrence: publication is idempotent on it);
 *   campaign_filtered     the customer was not, and why (no_consent,
 *                         frequency_cap, quiet_period, holdout, ...).
 * The occurrence is '' for a one-shot audience, the year for birthdays and
 * signup anniversaries, the cart reference for abandoned carts, the last
 * order day for a dormancy episode, the snapshot id for a segment
 * transition: a recurring campaign offers once per occurrence.
 *
 * Citus: configuration tables (marketing_campaign, experiment,
 * experiment_variant, frequency_cap) are plain tables without triggers, so
 * they can become reference tables; every per-customer table has
 * customer_id text COLLATE "C" first in its primary key and in every unique
 * constraint, and no foreign key.  Frequency caps are counted per customer
 * from that customer's own publication rows (colocated on the customer's
 * shard); no global counter exists (doc/campaigns.md, "Caps on Citus").
 * ------------------------------------------------------------------------ */

/* tables: configuration */

CREATE TABLE loyalty.experiment (
	experiment_id	bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name			text NOT NULL,
	salt			text NOT NULL,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT experiment_name_key UNIQUE (name)
);

COMMENT ON TABLE loyalty.experiment IS
	'Experiments: a customer''s variant is a stable hash of (salt, customer_id) mapped onto the variants'' weights (loyalty.experiment_variant)';
COMMENT ON COLUMN loyalty.experiment.salt IS
	'Hashed with the customer key; distinct per experiment, so that assignments of two experiments are independent';

SELECT pg_catalog.pg_extension_config_dump('loyalty.experiment', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('loyalty.experiment', 'experiment_id'), '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.experiment'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.experiment'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.experiment_variant (
	experiment_id	bigint NOT NULL,
	variant			text NOT NULL,
	weight			integer NOT NULL,
	holdout			boolean NOT NULL DEFAULT false,
	offer_kind		text,
	coupon_campaign_id bigint,
	code_pattern	text,
	public_code		text,
	bonus_points	bigint,
	position		integer NOT NULL,
	PRIMARY KEY (experiment_id, variant),
	CONSTRAINT experiment_variant_weight_check CHECK (weight >= 1 AND weight <= 10000),
	CONSTRAINT experiment_variant_offer_check
		CHECK (offer_kind IS NULL OR offer_kind IN ('code', 'public_code', 'points', 'none')),
	CONSTRAINT experiment_variant_holdout_check CHECK (NOT holdout OR offer_kind IS NULL)
);

COMMENT ON TABLE loyalty.experiment_variant IS
	'Variants of an experiment with their weights; a hold-out variant receives nothing; a variant''s offer columns, when offer_kind is set, replace the campaign''s offer';
COMMENT ON COLUMN loyalty.experiment_variant.holdout IS
	'True: the untreated control group; its members are logged in campaign_filtered with reason holdout and receive nothing';
COMMENT ON COLUMN loyalty.experiment_variant.offer_kind IS
	'NULL: the campaign''s own offer; else code, public_code, points or none with the columns below';
COMMENT ON COLUMN loyalty.experiment_variant.position IS
	'Order of the variant on the hash scale (the order the variants were given in)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.experiment_variant', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.experiment_variant'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.experiment_variant'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.marketing_campaign (
	marketing_campaign_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name			text NOT NULL,
	audience_kind	text NOT NULL,
	audience		jsonb NOT NULL DEFAULT '{}',
	offer_kind		text NOT NULL,
	coupon_campaign_id bigint,
	code_pattern	text,
	public_code		text,
	bonus_points	bigint,
	channel			text NOT NULL DEFAULT 'email',
	quiet_period	interval,
	experiment_id	bigint,
	schedule		text NOT NULL DEFAULT 'manual',
	starts_at		timestamptz,
	ends_at			timestamptz,
	paused			boolean NOT NULL DEFAULT false,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT marketing_campaign_name_key UNIQUE (name),
	CONSTRAINT marketing_campaign_audience_check
		CHECK (audience_kind IN ('segments', 'segment_entered', 'tier', 'dormant', 'query',
								 'customers', 'welcome', 'birthday', 'anniversary',
								 'abandoned_cart')
			   AND pg_catalog.jsonb_typeof(audience) = 'object'),
	CONSTRAINT marketing_campaign_offer_check
		CHECK (offer_kind IN ('code', 'public_code', 'points', 'none')),
	CONSTRAINT marketing_campaign_schedule_check CHECK (schedule IN ('manual', 'scheduled'))
);

COMMENT ON TABLE loyalty.marketing_campaign IS
	'Marketing campaigns (the campaign layer): audience, offer (pointing to a coupon campaign, loyalty.campaign, for codes), channel, quiet period, experiment, schedule; write through create_marketing_campaign / update_marketing_campaign';
COMMENT ON COLUMN loyalty.marketing_campaign.audience_kind IS
	'segments, segment_entered, tier, dormant, query, customers, welcome, birthday, anniversary or abandoned_cart; parameters in audience (doc/campaigns.md)';
COMMENT ON COLUMN loyalty.marketing_campaign.audience IS
	'Parameters of the audience, e.g. {"segments": ["At Risk"]}, {"days": 90}, {"query": "SELECT ..."}';
COMMENT ON COLUMN loyalty.marketing_campaign.offer_kind IS
	'code (a generated code of coupon_campaign_id bound to the customer), public_code (public_code of coupon_campaign_id), points (bonus_points on the ledger) or none (a message only)';
COMMENT ON COLUMN loyalty.marketing_campaign.coupon_campaign_id IS
	'The coupon campaign (loyalty.campaign.campaign_id) whose codes are offered';
COMMENT ON COLUMN loyalty.marketing_campaign.channel IS
	'Channel the offer is sent through (email, sms, push, ...): consent and per-channel frequency caps are checked for it';
COMMENT ON COLUMN loyalty.marketing_campaign.quiet_period IS
	'A customer offered this campaign is not offered it again (next occurrence) before this much time has passed';
COMMENT ON COLUMN loyalty.marketing_campaign.schedule IS
	'manual: published by publish_marketing_campaign only; scheduled: also by run_campaigns and the triggered-job procedures';

SELECT pg_catalog.pg_extension_config_dump('loyalty.marketing_campaign', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('loyalty.marketing_campaign', 'marketing_campaign_id'), '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.marketing_campaign'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.marketing_campaign'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.frequency_cap (
	cap_id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	channel			text,
	max_offers		integer NOT NULL,
	period			interval NOT NULL,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT frequency_cap_check CHECK (max_offers >= 1 AND period > '0'::interval)
);

COMMENT ON TABLE loyalty.frequency_cap IS
	'Pressure limits across campaigns: at most max_offers publications per customer within any period ending at the publication, on one channel or (channel NULL) overall';

SELECT pg_catalog.pg_extension_config_dump('loyalty.frequency_cap', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('loyalty.frequency_cap', 'cap_id'), '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.frequency_cap'::pg_catalog.regclass, 'SELECT, INSERT, UPDATE, DELETE'::pg_catalog.text);

/* tables: per customer */

CREATE TABLE loyalty.campaign_publication (
	customer_id		text COLLATE "C" NOT NULL,
	marketing_campaign_id bigint NOT NULL,
	occurrence		text NOT NULL DEFAULT '',
	variant			text,
	channel			text NOT NULL,
	published_at	timestamptz NOT NULL,
	offer_kind		text NOT NULL,
	coupon_campaign_id bigint,
	code			loyalty.coupon_code,
	bonus_points	bigint,
	points_reference text,
	PRIMARY KEY (customer_id, marketing_campaign_id, occurrence)
);

COMMENT ON TABLE loyalty.campaign_publication IS
	'Publication log: one row per customer offered a marketing campaign (per occurrence): variant, channel, time and what was given';
COMMENT ON COLUMN loyalty.campaign_publication.occurrence IS
	''''' for a one-shot audience; the year (birthday, anniversary), cart_ref (abandoned cart), last order day (dormant), snapshot id (segment_entered) for recurring ones';
COMMENT ON COLUMN loyalty.campaign_publication.variant IS 'Experiment variant the customer was assigned (NULL: no experiment)';
COMMENT ON COLUMN loyalty.campaign_publication.code IS 'The code given (offer code: bound to the customer; public_code: the public code)';
COMMENT ON COLUMN loyalty.campaign_publication.points_reference IS
	'Ledger reference of the bonus points (''mc:<campaign>:<occurrence>'' of the customer, idempotent)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.campaign_publication', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.campaign_publication'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.campaign_publication'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.campaign_filtered (
	customer_id		text COLLATE "C" NOT NULL,
	marketing_campaign_id bigint NOT NULL,
	occurrence		text NOT NULL DEFAULT '',
	reason			text NOT NULL,
	variant			text,
	filtered_at		timestamptz NOT NULL,
	PRIMARY KEY (customer_id, marketing_campaign_id, occurrence),
	CONSTRAINT campaign_filtered_reason_check
		CHECK (reason IN ('no_consent', 'frequency_cap', 'quiet_period', 'holdout',
						  'already_offered', 'offer_unavailable'))
);

COMMENT ON TABLE loyalty.campaign_filtered IS
	'Filtered-out log: audience members a run did not offer the campaign, with the reason (the latest reason per occurrence, since filtered_at); a customer offered later keeps the row (the funnel) and gets a publication';
COMMENT ON COLUMN loyalty.campaign_filtered.reason IS
	'no_consent, frequency_cap, quiet_period, holdout (control group, final), already_offered, offer_unavailable';
COMMENT ON COLUMN loyalty.campaign_filtered.filtered_at IS 'When the run first filtered the customer for this reason';

SELECT pg_catalog.pg_extension_config_dump('loyalty.campaign_filtered', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.campaign_filtered'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.campaign_filtered'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.experiment_assignment (
	customer_id		text COLLATE "C" NOT NULL,
	experiment_id	bigint NOT NULL,
	variant			text NOT NULL,
	holdout			boolean NOT NULL,
	assigned_at		timestamptz NOT NULL,
	PRIMARY KEY (customer_id, experiment_id)
);

COMMENT ON TABLE loyalty.experiment_assignment IS
	'The variant each customer drew in an experiment, recorded when a run first met the customer (the draw itself is a stable hash: recording never changes it)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.experiment_assignment', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.experiment_assignment'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.experiment_assignment'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.consent (
	customer_id		text COLLATE "C" NOT NULL,
	channel			text NOT NULL,
	granted			boolean NOT NULL,
	source			text NOT NULL,
	changed_at		timestamptz NOT NULL,
	PRIMARY KEY (customer_id, channel)
);

COMMENT ON TABLE loyalty.consent IS
	'Current marketing consent per customer and channel (the latest change by changed_at); no row or granted false: no offer on that channel';

SELECT pg_catalog.pg_extension_config_dump('loyalty.consent', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.consent'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.consent_history (
	customer_id		text COLLATE "C" NOT NULL,
	history_id		bigint GENERATED ALWAYS AS IDENTITY,
	channel			text NOT NULL,
	granted			boolean NOT NULL,
	source			text NOT NULL,
	changed_at		timestamptz NOT NULL,
	recorded_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	PRIMARY KEY (customer_id, history_id)
);

COMMENT ON TABLE loyalty.consent_history IS
	'Every opt-in and opt-out recorded by set_consent (append-only): channel, granted, source, business time and recording time';

SELECT pg_catalog.pg_extension_config_dump('loyalty.consent_history', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('loyalty.consent_history', 'history_id'), '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.consent_history'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.customer_dates (
	customer_id		text COLLATE "C" NOT NULL PRIMARY KEY,
	birth_date		date,
	signup_date		date,
	updated_at		timestamptz NOT NULL DEFAULT pg_catalog.now()
);

COMMENT ON TABLE loyalty.customer_dates IS
	'Customer dates the app supplies (set_customer_dates): birthday and signup day, in the program time zone';

SELECT pg_catalog.pg_extension_config_dump('loyalty.customer_dates', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.customer_dates'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.cart (
	customer_id		text COLLATE "C" NOT NULL,
	cart_ref		text NOT NULL,
	amount			numeric NOT NULL,
	items			jsonb,
	updated_at		timestamptz NOT NULL,
	closed_at		timestamptz,
	PRIMARY KEY (customer_id, cart_ref)
);

CREATE INDEX cart_open_idx ON loyalty.cart (updated_at) WHERE closed_at IS NULL;

COMMENT ON TABLE loyalty.cart IS
	'Carts the app records (record_cart; close_cart when ordered or emptied): an open cart untouched for the campaign''s delay is abandoned';

SELECT pg_catalog.pg_extension_config_dump('loyalty.cart', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.cart'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.outbox (
	customer_id		text COLLATE "C" NOT NULL,
	outbox_id		bigint GENERATED ALWAYS AS IDENTITY (CACHE 100),
	kind			text NOT NULL,
	event_key		text NOT NULL,
	channel			text,
	payload			jsonb NOT NULL,
	created_at		timestamptz NOT NULL,
	acked_at		timestamptz,
	PRIMARY KEY (customer_id, outbox_id),
	CONSTRAINT outbox_kind_check CHECK (kind IN ('offer', 'tier_change', 'points_expiry'))
);

-- offers are unique through their publication (one outbox row per new one)
CREATE UNIQUE INDEX outbox_event_key ON loyalty.outbox (customer_id, kind, event_key)
	WHERE kind <> 'offer';
CREATE INDEX outbox_pending_idx ON loyalty.outbox (outbox_id) WHERE acked_at IS NULL;

COMMENT ON TABLE loyalty.outbox IS
	'Events for the shop''s mailer: offers to send, tier changes, points-expiry warnings; claimed with outbox_claim (FOR UPDATE SKIP LOCKED), acknowledged by id with outbox_ack; a NOTIFY loyalty_outbox on commit';
COMMENT ON COLUMN loyalty.outbox.event_key IS
	'What the event is about, unique per customer and kind: ''<marketing_campaign_id>:<occurrence>'' (offer), tier_history id (tier_change), ''<lot_id>:<expiry day>'' (points_expiry)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.outbox', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('loyalty.outbox', 'outbox_id'), '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.outbox'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/* ---------------------------------------------------------------------------
 * campaign_api.sql: the campaign layer -- functions and procedures
 *
 * Admin: create_experiment, create_marketing_campaign,
 * set_marketing_campaign_paused, preview_audience,
 * publish_marketing_campaign, CALL run_campaigns(as_of) and the triggered
 * jobs (run_welcome_campaigns, run_birthday_campaigns,
 * run_anniversary_campaigns, run_reactivation_campaigns,
 * run_abandoned_cart_campaigns), queue_expiry_warnings.  App: set_consent,
 * set_customer_dates, record_cart, close_cart, outbox_claim, outbox_ack.
 *
 * Publication runs in two layers.  publish_marketing_campaign runs with
 * the caller's rights: an audience given as an admin's SQL query is
 * executed there, as written (never spliced into another statement), so it
 * can read only what the calling role may read.  The keys it returns go to
 * loyalty._publish (SECURITY DEFINER), which computes every other audience,
 * classifies each member (already offered, hold-out, consent, quiet
 * period, frequency caps), logs the filtered ones, and publishes the rest
 * set-based: codes, publications and outbox rows each in one statement.
 *
 * Concurrency: a publication takes one transaction-level advisory lock
 * (loyalty._publish_lock) before it reads what was published, and runs in
 * READ COMMITTED, so each of its statements sees every publication
 * committed before it: two jobs publishing the same campaign, or two
 * campaigns under one frequency cap, never offer twice nor exceed a cap.
 * ------------------------------------------------------------------------ */

/* functions: helpers */

CREATE FUNCTION loyalty.experiment_bucket(salt text, customer_id text)
RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
SELECT (('x'::pg_catalog.text OPERATOR(pg_catalog.||) pg_catalog.substr(pg_catalog.md5(
			$1 OPERATOR(pg_catalog.||) ':'::pg_catalog.text OPERATOR(pg_catalog.||) $2), 1, 13))::pg_catalog.bit(52)::pg_catalog.int8
		)::pg_catalog.float8 OPERATOR(pg_catalog./) 4503599627370496::pg_catalog.float8
$$;

COMMENT ON FUNCTION loyalty.experiment_bucket(text, text) IS
	'Stable position in [0, 1) of a customer in an experiment: the first 52 bits of md5(salt || '':'' || customer_id); the same in every PostgreSQL version';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.experiment_bucket(text, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* The program's local date of a time (loyalty.settings.timezone). */
CREATE FUNCTION loyalty._campaign_local_date(at timestamptz)
RETURNS date
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
SELECT pg_catalog.timezone(coalesce((SELECT s.timezone FROM loyalty.settings s), 'UTC'::pg_catalog.text), at)::pg_catalog.date
$$;

COMMENT ON FUNCTION loyalty._campaign_local_date(timestamptz) IS
	'Internal: the day of a time in the program time zone';

/*
 * The yearly date of a month/day in a year: February 29 falls on February
 * 28 in non-leap years.
 */
CREATE FUNCTION loyalty._yearly_date(day date, year integer)
RETURNS date
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
SELECT CASE WHEN pg_catalog.date_part('month'::pg_catalog.text, $1) OPERATOR(pg_catalog.=) 2::pg_catalog.float8
				 AND pg_catalog.date_part('day'::pg_catalog.text, $1) OPERATOR(pg_catalog.=) 29::pg_catalog.float8
				 AND NOT pg_catalog.date_part('day'::pg_catalog.text,
						pg_catalog.make_date($2, 3, 1) OPERATOR(pg_catalog.-) 1) OPERATOR(pg_catalog.=) 29::pg_catalog.float8
			THEN pg_catalog.make_date($2, 2, 28)
			ELSE pg_catalog.make_date($2, pg_catalog.date_part('month'::pg_catalog.text, $1)::pg_catalog.int4,
									  pg_catalog.date_part('day'::pg_catalog.text, $1)::pg_catalog.int4) END
$$;

COMMENT ON FUNCTION loyalty._yearly_date(date, integer) IS
	'Internal: the date of a birthday or anniversary in a year (February 29 on February 28 in non-leap years)';

/* One advisory lock serializes publications (see the header). */
CREATE FUNCTION loyalty._publish_lock()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF pg_catalog.current_setting('transaction_isolation'::pg_catalog.text) <> 'read committed' THEN
		RAISE EXCEPTION 'campaign publication needs isolation level read committed'
			USING ERRCODE = 'feature_not_supported',
				  DETAIL = pg_catalog.json_build_object('reason', 'isolation_level',
							   'isolation', pg_catalog.current_setting('transaction_isolation'::pg_catalog.text))::pg_catalog.text,
				  HINT = 'Run the job in a READ COMMITTED transaction (the default): it must see the publications of jobs that ran before it.';
	END IF;
	-- 'loya', 'camp'
	PERFORM pg_catalog.pg_advisory_xact_lock(1819243873, 1667329392);
END;
$$;

COMMENT ON FUNCTION loyalty._publish_lock() IS
	'Internal: the transaction-level lock every publication takes before it reads the publication log (caps and idempotence stay exact)';

/* functions: configuration (admin) */

CREATE FUNCTION loyalty.create_experiment(name text, variants jsonb, salt text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	p_name text := name;
	id bigint;
	v jsonb;
	pos integer := 0;
	holdouts integer := 0;
BEGIN
	IF p_name IS NULL OR variants IS NULL THEN
		RAISE EXCEPTION 'name and variants must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF pg_catalog.jsonb_typeof(variants) <> 'array' OR pg_catalog.jsonb_array_length(variants) < 1 THEN
		RAISE EXCEPTION 'variants must be a non-empty JSON array'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Example: [{"variant": "A", "weight": 45}, {"variant": "control", "weight": 10, "holdout": true}].';
	END IF;
	INSERT INTO loyalty.experiment AS e (name, salt)
	VALUES (p_name, coalesce(create_experiment.salt, p_name || ':' || pg_catalog.gen_random_uuid()::pg_catalog.text))
	RETURNING e.experiment_id INTO id;
	FOR v IN SELECT x.value FROM pg_catalog.jsonb_array_elements(variants) x LOOP
		pos := pos + 1;
		IF pg_catalog.jsonb_typeof(v) <> 'object' OR v->>'variant' IS NULL OR v->>'weight' IS NULL THEN
			RAISE EXCEPTION 'variant % needs "variant" and "weight"', pos USING ERRCODE = 'invalid_parameter_value';
		END IF;
		IF coalesce((v->>'holdout')::boolean, false) THEN
			holdouts := holdouts + 1;
			IF v ? 'offer_kind' THEN
				RAISE EXCEPTION 'hold-out variant "%" cannot have an offer', v->>'variant'
					USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A hold-out receives nothing.';
			END IF;
		END IF;
		INSERT INTO loyalty.experiment_variant (experiment_id, variant, weight, holdout, offer_kind,
												coupon_campaign_id, code_pattern, public_code, bonus_points, position)
		VALUES (id, v->>'variant', (v->>'weight')::integer, coalesce((v->>'holdout')::boolean, false),
				v->>'offer_kind', (v->>'coupon_campaign_id')::bigint, v->>'code_pattern',
				v->>'public_code', (v->>'bonus_points')::bigint, pos);
		IF v->>'offer_kind' IS NOT NULL THEN
			PERFORM loyalty._check_offer(v->>'offer_kind', (v->>'coupon_campaign_id')::bigint, v->>'code_pattern',
										 v->>'public_code', (v->>'bonus_points')::bigint);
		END IF;
	END LOOP;
	IF holdouts > 1 THEN
		RAISE EXCEPTION 'an experiment has at most one hold-out variant' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	RETURN id;
END;
$$;

/* Check an offer's parameters (22023 on a bad one). */
CREATE FUNCTION loyalty._check_offer(offer_kind text, coupon_campaign_id bigint, code_pattern text,
									 public_code text, bonus_points bigint)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
	IF offer_kind IN ('code', 'public_code') THEN
		IF coupon_campaign_id IS NULL OR NOT EXISTS (
				SELECT 1 FROM loyalty.campaign c WHERE c.campaign_id = _check_offer.coupon_campaign_id) THEN
			RAISE EXCEPTION 'offer % needs an existing coupon campaign', offer_kind
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = pg_catalog.json_build_object('reason', 'unknown_coupon_campaign',
								   'coupon_campaign_id', coupon_campaign_id)::pg_catalog.text;
		END IF;
	END IF;
	IF offer_kind = 'code' THEN
		IF code_pattern IS NULL THEN
			RAISE EXCEPTION 'offer code needs a code_pattern' USING ERRCODE = 'invalid_parameter_value';
		END IF;
		PERFORM loyalty.random_codes(code_pattern, 1);	-- raises on a bad pattern
	ELSIF offer_kind = 'public_code' THEN
		IF public_code IS NULL OR NOT EXISTS (
				SELECT 1 FROM loyalty.coupon k
				WHERE k.code OPERATOR(loyalty.=) loyalty.vanity_code(public_code)
				  AND k.campaign_id = _check_offer.coupon_campaign_id AND k.customer_id IS NULL) THEN
			RAISE EXCEPTION 'public code % is not a code of coupon campaign %', public_code, coupon_campaign_id
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = pg_catalog.json_build_object('reason', 'unknown_public_code',
								   'public_code', public_code)::pg_catalog.text,
					  HINT = 'Add it first with loyalty.add_public_code.';
		END IF;
	ELSIF offer_kind = 'points' THEN
		IF bonus_points IS NULL OR bonus_points < 1 THEN
			RAISE EXCEPTION 'offer points needs bonus_points >= 1' USING ERRCODE = 'invalid_parameter_value';
		END IF;
	ELSIF offer_kind IS DISTINCT FROM 'none' THEN
		RAISE EXCEPTION 'unknown offer kind "%"', offer_kind
			USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Offer kinds: code, public_code, points, none.';
	END IF;
END;
$$;

COMMENT ON FUNCTION loyalty._check_offer(text, bigint, text, text, bigint) IS
	'Internal: check the parameters of an offer (campaign or variant)';

COMMENT ON FUNCTION loyalty.create_experiment(text, jsonb, text) IS
	'Create an experiment from a JSON array of variants {"variant", "weight", "holdout", "offer_kind", "coupon_campaign_id", "code_pattern", "public_code", "bonus_points"}; salt (default: random) seeds the assignment hash';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.create_experiment(text, jsonb, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.create_marketing_campaign(
	name text, audience_kind text, audience jsonb, offer_kind text,
	coupon_campaign_id bigint DEFAULT NULL, code_pattern text DEFAULT NULL,
	public_code text DEFAULT NULL, bonus_points bigint DEFAULT NULL,
	channel text DEFAULT 'email', quiet_period interval DEFAULT NULL,
	experiment_id bigint DEFAULT NULL, schedule text DEFAULT 'manual',
	starts_at timestamptz DEFAULT NULL, ends_at timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	id bigint;
	k text := audience_kind;
	a jsonb := coalesce(audience, '{}'::jsonb);
BEGIN
	IF name IS NULL OR k IS NULL OR offer_kind IS NULL OR channel IS NULL THEN
		RAISE EXCEPTION 'name, audience_kind, offer_kind and channel must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF k NOT IN ('segments', 'segment_entered', 'tier', 'dormant', 'query', 'customers', 'welcome',
				 'birthday', 'anniversary', 'abandoned_cart') THEN
		RAISE EXCEPTION 'unknown audience kind "%"', k
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Audience kinds: segments, segment_entered, tier, dormant, query, customers, welcome, birthday, anniversary, abandoned_cart.';
	END IF;
	IF schedule IS NULL OR schedule NOT IN ('manual', 'scheduled') THEN
		RAISE EXCEPTION 'schedule must be manual or scheduled' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	PERFORM loyalty._check_offer(offer_kind, coupon_campaign_id, code_pattern, public_code, bonus_points);
	IF experiment_id IS NOT NULL AND NOT EXISTS (
			SELECT 1 FROM loyalty.experiment e WHERE e.experiment_id = create_marketing_campaign.experiment_id) THEN
		RAISE EXCEPTION 'experiment % does not exist', experiment_id USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF (k = 'segments' AND pg_catalog.jsonb_typeof(a->'segments') IS DISTINCT FROM 'array')
	   OR (k = 'segment_entered' AND a->>'segment' IS NULL)
	   OR (k = 'tier' AND pg_catalog.jsonb_typeof(a->'tiers') IS DISTINCT FROM 'array')
	   OR (k = 'dormant' AND (a->>'days')::integer IS NULL)
	   OR (k = 'query' AND pg_catalog.jsonb_typeof(a->'query') IS DISTINCT FROM 'string')
	   OR (k = 'customers' AND pg_catalog.jsonb_typeof(a->'customers') IS DISTINCT FROM 'array') THEN
		RAISE EXCEPTION 'audience % lacks its parameters', k
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = pg_catalog.json_build_object('reason', 'audience_parameters', 'audience_kind', k)::pg_catalog.text,
				  HINT = 'segments: {"segments": [...]}; segment_entered: {"segment": "At Risk", "since": "2026-01-01"}; tier: {"tiers": [...]}; dormant: {"days": 90}; query: {"query": "SELECT ..."}; customers: {"customers": [...]}.';
	END IF;
	-- intervals of the triggered audiences must parse now, not at the job
	PERFORM (a->>'within')::interval, (a->>'after')::interval, (a->>'max_age')::interval,
			(a->>'catch_up_days')::integer, (a->>'since')::timestamptz;
	INSERT INTO loyalty.marketing_campaign AS m (name, audience_kind, audience, offer_kind, coupon_campaign_id,
			code_pattern, public_code, bonus_points, channel, quiet_period, experiment_id, schedule, starts_at, ends_at)
	VALUES (name, k, a, offer_kind, coupon_campaign_id, code_pattern, public_code, bonus_points, channel,
			quiet_period, experiment_id, schedule, starts_at, ends_at)
	RETURNING m.marketing_campaign_id INTO id;
	RETURN id;
END;
$$;

COMMENT ON FUNCTION loyalty.create_marketing_campaign(text, text, jsonb, text, bigint, text, text, bigint, text, interval, bigint, text, timestamptz, timestamptz) IS
	'Create a marketing campaign: audience (kind and parameters), offer (code / public_code of a coupon campaign, points, none), channel, quiet period, experiment, schedule (manual or scheduled), dates; options by name';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.create_marketing_campaign(text, text, jsonb, text, bigint, text, text, bigint, text, interval, bigint, text, timestamptz, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.set_marketing_campaign_paused(marketing_campaign_id bigint, paused boolean)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE loyalty.marketing_campaign m
	SET paused = set_marketing_campaign_paused.paused, updated_at = pg_catalog.now()
	WHERE m.marketing_campaign_id = set_marketing_campaign_paused.marketing_campaign_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'marketing campaign % does not exist', set_marketing_campaign_paused.marketing_campaign_id
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	RETURN set_marketing_campaign_paused.paused;
END;
$$;

COMMENT ON FUNCTION loyalty.set_marketing_campaign_paused(bigint, boolean) IS
	'Pause (true) or resume (false) a marketing campaign: a paused campaign publishes nothing';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.set_marketing_campaign_paused(bigint, boolean)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* functions: customer data the app supplies (app) */

CREATE FUNCTION loyalty.set_consent(customer_id text, channel text, granted boolean, source text,
									at timestamptz DEFAULT pg_catalog.now())
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	cur boolean;
BEGIN
	IF customer_id IS NULL OR channel IS NULL OR granted IS NULL OR source IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, channel, granted, source and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::pg_catalog.text, customer_id);
	INSERT INTO loyalty.consent_history (customer_id, channel, granted, source, changed_at)
	VALUES (customer_id, channel, granted, source, at);
	-- the latest business time wins: a late-arriving older change is history only
	INSERT INTO loyalty.consent AS c (customer_id, channel, granted, source, changed_at)
	VALUES (customer_id, channel, granted, source, at)
	ON CONFLICT ON CONSTRAINT consent_pkey DO UPDATE
		SET granted = excluded.granted, source = excluded.source, changed_at = excluded.changed_at
		WHERE c.changed_at <= excluded.changed_at;
	SELECT c.granted INTO cur FROM loyalty.consent c
	WHERE c.customer_id = set_consent.customer_id AND c.channel = set_consent.channel;
	RETURN cur;
END;
$$;

COMMENT ON FUNCTION loyalty.set_consent(text, text, boolean, text, timestamptz) IS
	'Record an opt-in (granted true) or opt-out of a customer for a channel, with its source and time; history kept in consent_history; returns the current consent';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.set_consent(text, text, boolean, text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.set_customer_dates(customer_id text, birth_date date DEFAULT NULL,
										   signup_date date DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
	IF customer_id IS NULL THEN
		RAISE EXCEPTION 'customer_id must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::pg_catalog.text, customer_id);
	INSERT INTO loyalty.customer_dates AS d (customer_id, birth_date, signup_date)
	VALUES (customer_id, birth_date, signup_date)
	ON CONFLICT ON CONSTRAINT customer_dates_pkey DO UPDATE
		SET birth_date = coalesce(excluded.birth_date, d.birth_date),
			signup_date = coalesce(excluded.signup_date, d.signup_date),
			updated_at = pg_catalog.now();
END;
$$;

COMMENT ON FUNCTION loyalty.set_customer_dates(text, date, date) IS
	'Record a customer''s birthday and signup day (program time zone) for the birthday, anniversary and welcome jobs; a NULL keeps the stored value';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.set_customer_dates(text, date, date)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.record_cart(customer_id text, cart_ref text, amount numeric,
									items jsonb DEFAULT NULL, at timestamptz DEFAULT pg_catalog.now())
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
	IF customer_id IS NULL OR cart_ref IS NULL OR amount IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, cart_ref, amount and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::pg_catalog.text, customer_id);
	INSERT INTO loyalty.cart AS c (customer_id, cart_ref, amount, items, updated_at)
	VALUES (customer_id, cart_ref, amount, items, at)
	ON CONFLICT ON CONSTRAINT cart_pkey DO UPDATE
		SET amount = excluded.amount, items = excluded.items, updated_at = excluded.updated_at
		WHERE c.closed_at IS NULL AND c.updated_at <= excluded.updated_at;
END;
$$;

COMMENT ON FUNCTION loyalty.record_cart(text, text, numeric, jsonb, timestamptz) IS
	'Record (or update) an open cart of a customer; an open cart untouched for a campaign''s delay is abandoned (run_abandoned_cart_campaigns)';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.record_cart(text, text, numeric, jsonb, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.close_cart(customer_id text, cart_ref text, at timestamptz DEFAULT pg_catalog.now())
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
	UPDATE loyalty.cart c SET closed_at = at
	WHERE c.customer_id = close_cart.customer_id AND c.cart_ref = close_cart.cart_ref AND c.closed_at IS NULL;
	RETURN FOUND;
END;
$$;

COMMENT ON FUNCTION loyalty.close_cart(text, text, timestamptz) IS
	'Close a cart (ordered or emptied): it is no longer abandoned; true if it was open';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.close_cart(text, text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* ---------------------------------------------------------------------------
 * campaign_publish.sql: audiences, classification and publication
 *
 * loyalty._publish does one run of one marketing campaign in set-based
 * statements over a temporary stage table (one row per audience member and
 * occurrence): the audience and its classification in one statement, the
 * frequency caps in a second, then per offer (the campaign's, or each
 * variant's) the codes, publications and outbox rows in one statement.
 * Nothing of the stage outlives the transaction (ON COMMIT DROP).
 * ------------------------------------------------------------------------ */

/* functions: audiences */

/*
 * An admin's audience query, run with the rights of the calling role: this
 * function is SECURITY INVOKER and executes the text exactly as given (one
 * column of text keys), never inside another statement.
 */
CREATE FUNCTION loyalty._audience_query(query text)
RETURNS SETOF text
LANGUAGE plpgsql VOLATILE STRICT SECURITY INVOKER
AS $$
BEGIN
	RETURN QUERY EXECUTE query;
END;
$$;

COMMENT ON FUNCTION loyalty._audience_query(text) IS
	'Internal: run an admin''s audience query (one text column of customer keys) with the rights of the calling role (SECURITY INVOKER, never spliced into another statement)';

/*
 * The SELECT giving (customer_id, occurrence) of an audience kind, over the
 * parameters $1 audience jsonb, $2 as_of, $3 keys text[], $4 the program's
 * local date of as_of.  Fixed texts: no value is ever spliced into them.
 */
CREATE FUNCTION loyalty._audience_sql(audience_kind text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
SELECT CASE $1
	WHEN 'segments' THEN
		'SELECT s.customer_id, ''''::text AS occurrence FROM loyalty.customer_stats s
		 WHERE s.score IS NOT NULL AND s.segment IN (SELECT pg_catalog.jsonb_array_elements_text($1->''segments''))'
	WHEN 'segment_entered' THEN
		'SELECT DISTINCT ON (sc.customer_id) sc.customer_id, sc.snapshot_id::text AS occurrence
		 FROM loyalty.segment_change sc
		 JOIN loyalty.segment_snapshot ss ON ss.snapshot_id = sc.snapshot_id
		 JOIN loyalty.customer_stats cs ON cs.customer_id = sc.customer_id AND cs.segment = sc.segment
		 WHERE sc.segment = $1->>''segment''
		   AND ss.as_of >= coalesce(($1->>''since'')::timestamptz, $2 - ''30 days''::interval)
		   AND ss.as_of <= $2
		 ORDER BY sc.customer_id, sc.snapshot_id DESC'
	WHEN 'tier' THEN
		'SELECT a.customer_id COLLATE "C", ''''::text FROM loyalty.points_account a
		 WHERE a.tier IN (SELECT pg_catalog.jsonb_array_elements_text($1->''tiers''))'
	WHEN 'dormant' THEN
		'SELECT s.customer_id, pg_catalog.to_char(loyalty._campaign_local_date(s.last_order), ''YYYY-MM-DD'') FROM loyalty.customer_stats s
		 WHERE s.row_count > 0 AND s.last_order <= $2 - pg_catalog.make_interval(days => ($1->>''days'')::int)
		   AND NOT EXISTS (SELECT 1 FROM loyalty.customer_stats_delta d WHERE d.customer_id = s.customer_id)'
	WHEN 'query' THEN
		'SELECT k COLLATE "C", ''''::text FROM pg_catalog.unnest($3) k'
	WHEN 'customers' THEN
		'SELECT DISTINCT k COLLATE "C", ''''::text FROM pg_catalog.jsonb_array_elements_text($1->''customers'') k'
	WHEN 'welcome' THEN
		'SELECT d.customer_id, ''''::text FROM loyalty.customer_dates d
		 WHERE d.signup_date <= $4 AND d.signup_date >= $4 - coalesce(($1->>''within_days'')::int, 7)'
	WHEN 'birthday' THEN
		'SELECT d.customer_id, y::text FROM loyalty.customer_dates d,
			pg_catalog.generate_series(pg_catalog.date_part(''year'', $4)::int - 1, pg_catalog.date_part(''year'', $4)::int + 1) y
		 WHERE d.birth_date IS NOT NULL
		   AND loyalty._yearly_date(d.birth_date, y) BETWEEN $4 - coalesce(($1->>''catch_up_days'')::int, 7)
													   AND $4 + coalesce(($1->>''days_before'')::int, 0)'
	WHEN 'anniversary' THEN
		'SELECT d.customer_id, y::text FROM loyalty.customer_dates d,
			pg_catalog.generate_series(pg_catalog.date_part(''year'', $4)::int - 1, pg_catalog.date_part(''year'', $4)::int + 1) y
		 WHERE d.signup_date IS NOT NULL AND y > pg_catalog.date_part(''year'', d.signup_date)
		   AND loyalty._yearly_date(d.signup_date, y) BETWEEN $4 - coalesce(($1->>''catch_up_days'')::int, 7)
														AND $4 + coalesce(($1->>''days_before'')::int, 0)'
	WHEN 'abandoned_cart' THEN
		'SELECT c.customer_id, c.cart_ref FROM loyalty.cart c
		 WHERE c.closed_at IS NULL
		   AND c.updated_at <= $2 - coalesce(($1->>''after'')::interval, ''1 hour''::interval)
		   AND c.updated_at >= $2 - coalesce(($1->>''max_age'')::interval, ''7 days''::interval)'
	END
$$;

COMMENT ON FUNCTION loyalty._audience_sql(text) IS
	'Internal: the fixed SELECT of (customer_id, occurrence) of an audience kind (parameters $1 audience, $2 as_of, $3 keys, $4 local day)';

/* functions: publication */

CREATE FUNCTION loyalty._publish(marketing_campaign_id bigint, as_of timestamptz, keys text[], dry_run boolean)
RETURNS TABLE (outcome text, customers bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	m loyalty.marketing_campaign;
	salt text;
	g record;
	n bigint;
	rounds integer;
	today date;
BEGIN
	IF marketing_campaign_id IS NULL OR as_of IS NULL OR dry_run IS NULL THEN
		RAISE EXCEPTION 'marketing_campaign_id and as_of must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF NOT dry_run THEN
		PERFORM loyalty._publish_lock();
	END IF;
	SELECT * INTO m FROM loyalty.marketing_campaign c WHERE c.marketing_campaign_id = _publish.marketing_campaign_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'marketing campaign % does not exist', marketing_campaign_id USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF NOT dry_run AND (m.paused OR m.starts_at > as_of OR m.ends_at <= as_of) THEN
		RAISE EXCEPTION 'marketing campaign % is not active', marketing_campaign_id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = pg_catalog.json_build_object('reason',
							   CASE WHEN m.paused THEN 'paused' WHEN m.starts_at > as_of THEN 'not_started' ELSE 'ended' END,
							   'marketing_campaign_id', marketing_campaign_id, 'as_of', as_of)::pg_catalog.text;
	END IF;
	IF m.experiment_id IS NOT NULL THEN
		SELECT e.salt INTO salt FROM loyalty.experiment e WHERE e.experiment_id = m.experiment_id;
	END IF;
	today := loyalty._campaign_local_date(as_of);
	IF m.audience_kind = 'query' THEN
		-- distinct and not null here, so that the audience's unnest is
		-- planned with its true size (a DISTINCT over it would be guessed)
		keys := ARRAY(SELECT DISTINCT k COLLATE "C" FROM pg_catalog.unnest(keys) k WHERE k IS NOT NULL);
	END IF;

	IF pg_catalog.to_regclass('pg_temp._loyalty_stage') IS NULL THEN
		CREATE TEMPORARY TABLE _loyalty_stage (
			customer_id text COLLATE "C" NOT NULL,
			occurrence text NOT NULL,
			variant text,
			holdout boolean NOT NULL,
			reason text,
			offer_kind text,
			coupon_campaign_id bigint,
			code_pattern text,
			public_code text,
			bonus_points bigint
		) ON COMMIT DROP;
	ELSE
		TRUNCATE pg_temp._loyalty_stage;
	END IF;

	-- the audience, classified: already offered, consent, quiet period, then
	-- the hold-out, so that the hold-out is drawn from the customers who
	-- would have been offered (the control group of the treated ones)
	EXECUTE
		'WITH vb AS (
			SELECT v.variant, v.holdout, v.offer_kind, v.coupon_campaign_id, v.code_pattern, v.public_code,
				   v.bonus_points,
				   (sum(v.weight) OVER w - v.weight)::float8 / sum(v.weight) OVER () AS lo,
				   (sum(v.weight) OVER w)::float8 / sum(v.weight) OVER () AS hi
			FROM loyalty.experiment_variant v WHERE v.experiment_id = $5
			WINDOW w AS (ORDER BY v.position))
		 INSERT INTO pg_temp._loyalty_stage
		 SELECT a.customer_id, a.occurrence, v.variant, coalesce(v.holdout, false),
				CASE WHEN p.customer_id IS NOT NULL THEN ''already_offered''
					 WHEN c.granted IS NOT TRUE THEN ''no_consent''
					 WHEN $7 IS NOT NULL AND EXISTS (
						SELECT 1 FROM loyalty.campaign_publication q
						WHERE q.customer_id = a.customer_id AND q.marketing_campaign_id = $8
						  AND q.published_at > $2 - $7) THEN ''quiet_period''
					 WHEN v.holdout THEN ''holdout''
				END,
				CASE WHEN v.offer_kind IS NOT NULL THEN v.offer_kind ELSE $9 END,
				CASE WHEN v.offer_kind IS NOT NULL THEN v.coupon_campaign_id ELSE $10 END,
				CASE WHEN v.offer_kind IS NOT NULL THEN v.code_pattern ELSE $11 END,
				CASE WHEN v.offer_kind IS NOT NULL THEN v.public_code ELSE $12 END,
				CASE WHEN v.offer_kind IS NOT NULL THEN v.bonus_points ELSE $13 END
		 FROM (' || loyalty._audience_sql(m.audience_kind) || ') AS a (customer_id, occurrence)
		 LEFT JOIN loyalty.campaign_publication p
			ON p.customer_id = a.customer_id AND p.marketing_campaign_id = $8 AND p.occurrence = a.occurrence
		 LEFT JOIN loyalty.consent c ON c.customer_id = a.customer_id AND c.channel = $6
		 LEFT JOIN loyalty.experiment_assignment ea
			ON $5 IS NOT NULL AND ea.customer_id = a.customer_id AND ea.experiment_id = $5
		 LEFT JOIN LATERAL (
			SELECT vb.* FROM vb
			WHERE CASE WHEN ea.variant IS NOT NULL THEN vb.variant = ea.variant
					   ELSE loyalty.experiment_bucket($14, a.customer_id) >= vb.lo
							AND loyalty.experiment_bucket($14, a.customer_id) < vb.hi END
			LIMIT 1) v ON $5 IS NOT NULL'
	USING m.audience, as_of, CASE WHEN m.audience_kind = 'query' THEN keys END, today,
		  m.experiment_id, m.channel, m.quiet_period, m.marketing_campaign_id,
		  m.offer_kind, m.coupon_campaign_id, m.code_pattern, m.public_code, m.bonus_points, salt;

	-- frequency caps: prior publications in the window plus this run's, per customer
	IF EXISTS (SELECT 1 FROM loyalty.frequency_cap f WHERE f.channel IS NULL OR f.channel = m.channel) THEN
		WITH r AS (
			SELECT s.ctid AS row_id, s.customer_id,
				   pg_catalog.row_number() OVER (PARTITION BY s.customer_id ORDER BY s.occurrence) AS rn
			FROM pg_temp._loyalty_stage s WHERE s.reason IS NULL OR s.reason = 'holdout'
		), capped AS (
			SELECT DISTINCT r.row_id FROM r
			JOIN loyalty.frequency_cap f ON f.channel IS NULL OR f.channel = m.channel
			WHERE r.rn + (SELECT count(*) FROM loyalty.campaign_publication q
						  WHERE q.customer_id = r.customer_id
							AND q.published_at > as_of - f.period AND q.published_at <= as_of
							AND (f.channel IS NULL OR q.channel = f.channel)) > f.max_offers
		)
		UPDATE pg_temp._loyalty_stage s SET reason = 'frequency_cap'
		FROM capped WHERE s.ctid = capped.row_id;
	END IF;

	-- an offer whose coupon campaign is paused or over cannot be given
	UPDATE pg_temp._loyalty_stage s SET reason = 'offer_unavailable'
	FROM loyalty.campaign k
	WHERE s.reason IS NULL AND s.offer_kind IN ('code', 'public_code') AND k.campaign_id = s.coupon_campaign_id
	  AND (k.paused OR k.ends_at <= as_of);

	IF dry_run THEN
		RETURN QUERY
			SELECT coalesce(s.reason, 'published'), count(*) FROM pg_temp._loyalty_stage s GROUP BY 1 ORDER BY 1;
		RETURN;
	END IF;

	IF m.experiment_id IS NOT NULL THEN
		INSERT INTO loyalty.experiment_assignment (customer_id, experiment_id, variant, holdout, assigned_at)
		SELECT DISTINCT ON (s.customer_id) s.customer_id, m.experiment_id, s.variant, s.holdout, as_of
		FROM pg_temp._loyalty_stage s WHERE s.variant IS NOT NULL
		ON CONFLICT ON CONSTRAINT experiment_assignment_pkey DO NOTHING;
	END IF;

	INSERT INTO loyalty.campaign_filtered AS f (customer_id, marketing_campaign_id, occurrence, reason, variant, filtered_at)
	SELECT s.customer_id, m.marketing_campaign_id, s.occurrence, s.reason, s.variant, as_of
	FROM pg_temp._loyalty_stage s WHERE s.reason IS NOT NULL AND s.reason <> 'already_offered'
	ON CONFLICT ON CONSTRAINT campaign_filtered_pkey DO UPDATE
		SET reason = excluded.reason, variant = excluded.variant, filtered_at = excluded.filtered_at
		WHERE f.reason <> excluded.reason;

	FOR g IN
		SELECT DISTINCT s.offer_kind, s.coupon_campaign_id, s.code_pattern, s.public_code, s.bonus_points
		FROM pg_temp._loyalty_stage s WHERE s.reason IS NULL
	LOOP
		IF g.offer_kind = 'code' THEN
			rounds := 0;
			LOOP
				rounds := rounds + 1;
				IF rounds = 1 THEN
					SELECT count(*) INTO n FROM pg_temp._loyalty_stage s
					WHERE s.reason IS NULL AND s.offer_kind = 'code' AND s.coupon_campaign_id = g.coupon_campaign_id
					  AND s.code_pattern = g.code_pattern;
				ELSE
					SELECT count(*) INTO n FROM pg_temp._loyalty_stage s
					WHERE s.reason IS NULL AND s.offer_kind = 'code' AND s.coupon_campaign_id = g.coupon_campaign_id
					  AND s.code_pattern = g.code_pattern
					  AND NOT EXISTS (SELECT 1 FROM loyalty.campaign_publication q
									  WHERE q.customer_id = s.customer_id
										AND q.marketing_campaign_id = m.marketing_campaign_id
										AND q.occurrence = s.occurrence);
				END IF;
				EXIT WHEN n = 0;
				IF rounds > 20 THEN
					RAISE EXCEPTION 'could not generate enough distinct codes of pattern %', g.code_pattern
						USING ERRCODE = 'program_limit_exceeded',
							  DETAIL = 'The pattern''s codes are nearly all taken.',
							  HINT = 'Use a pattern with more random characters (#).';
				END IF;
				-- the first, plain round publishes all or nothing
				EXIT WHEN loyalty._publish_codes(m, g.coupon_campaign_id, g.code_pattern, n, as_of, rounds > 1)
						  AND rounds = 1;
			END LOOP;
		ELSE
			PERFORM loyalty._publish_other(m, g.offer_kind, g.coupon_campaign_id, g.public_code, g.bonus_points, as_of);
		END IF;
	END LOOP;

	RETURN QUERY
		SELECT coalesce(s.reason, 'published'), count(*) FROM pg_temp._loyalty_stage s GROUP BY 1 ORDER BY 1;
END;
$$;

COMMENT ON FUNCTION loyalty._publish(bigint, timestamptz, text[], boolean) IS
	'Internal: one run of a marketing campaign as of a time: audience (keys: the result of a query audience), classification, logs and publication; dry_run only counts';

/*
 * Bound codes for n staged customers of one (coupon campaign, pattern):
 * codes, publications and outbox rows in one statement.  The first round
 * inserts the codes plainly (a code equal to a stored one fails the whole
 * statement, which the subtransaction undoes, and the caller tries again);
 * later rounds skip such codes, publishing only the customers whose code
 * was stored, and the caller loops over the rest.
 */
CREATE FUNCTION loyalty._publish_codes(m loyalty.marketing_campaign, coupon_campaign_id bigint,
									   code_pattern text, n bigint, as_of timestamptz, skip_taken boolean)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
	IF NOT skip_taken THEN
		BEGIN
			WITH src AS MATERIALIZED (
				SELECT s.customer_id, s.occurrence, s.variant, r.code
				FROM (SELECT s.*, pg_catalog.row_number() OVER () AS i
					  FROM pg_temp._loyalty_stage s
					  WHERE s.reason IS NULL AND s.offer_kind = 'code'
						AND s.coupon_campaign_id = _publish_codes.coupon_campaign_id
						AND s.code_pattern = _publish_codes.code_pattern) s
				JOIN loyalty.random_codes(code_pattern, n::integer) WITH ORDINALITY AS r (code, i) ON r.i = s.i
			), k AS (
				INSERT INTO loyalty.coupon (code, campaign_id, customer_id, max_uses, created_at)
				SELECT src.code, coupon_campaign_id, src.customer_id, 1, as_of FROM src
			), p AS (
				INSERT INTO loyalty.campaign_publication (customer_id, marketing_campaign_id, occurrence, variant,
					channel, published_at, offer_kind, coupon_campaign_id, code)
				SELECT src.customer_id, m.marketing_campaign_id, src.occurrence, src.variant, m.channel, as_of,
					   'code', coupon_campaign_id, src.code
				FROM src
				RETURNING customer_id, occurrence, variant, code
			)
			INSERT INTO loyalty.outbox (customer_id, kind, event_key, channel, payload, created_at)
			SELECT p.customer_id, 'offer', m.marketing_campaign_id::text || ':' || p.occurrence, m.channel,
				   pg_catalog.jsonb_build_object('marketing_campaign_id', m.marketing_campaign_id,
					   'occurrence', p.occurrence, 'variant', p.variant, 'offer_kind', 'code',
					   'code', p.code::text),
				   as_of
			FROM p;
		EXCEPTION WHEN unique_violation THEN
			RETURN false;	-- a code was taken: the caller's next round skips taken codes
		END;
		RETURN true;
	END IF;

	WITH src AS MATERIALIZED (
		SELECT DISTINCT ON (r.code) s.customer_id, s.occurrence, s.variant, r.code
		FROM (SELECT s.*, pg_catalog.row_number() OVER () AS i
			  FROM pg_temp._loyalty_stage s
			  WHERE s.reason IS NULL AND s.offer_kind = 'code'
				AND s.coupon_campaign_id = _publish_codes.coupon_campaign_id
				AND s.code_pattern = _publish_codes.code_pattern
				AND NOT EXISTS (SELECT 1 FROM loyalty.campaign_publication q
								WHERE q.customer_id = s.customer_id
								  AND q.marketing_campaign_id = m.marketing_campaign_id
								  AND q.occurrence = s.occurrence)) s
		JOIN loyalty.random_codes(code_pattern, n::integer) WITH ORDINALITY AS r (code, i) ON r.i = s.i
		ORDER BY r.code
	), k AS (
		INSERT INTO loyalty.coupon (code, campaign_id, customer_id, max_uses, created_at)
		SELECT src.code, coupon_campaign_id, src.customer_id, 1, as_of FROM src
		ON CONFLICT ON CONSTRAINT coupon_code_key DO NOTHING
		RETURNING code, customer_id
	), p AS (
		INSERT INTO loyalty.campaign_publication (customer_id, marketing_campaign_id, occurrence, variant,
			channel, published_at, offer_kind, coupon_campaign_id, code)
		SELECT src.customer_id, m.marketing_campaign_id, src.occurrence, src.variant, m.channel, as_of,
			   'code', coupon_campaign_id, src.code
		FROM src JOIN k ON k.code OPERATOR(loyalty.=) src.code AND k.customer_id = src.customer_id
		RETURNING customer_id, occurrence, variant, code
	)
	INSERT INTO loyalty.outbox (customer_id, kind, event_key, channel, payload, created_at)
	SELECT p.customer_id, 'offer', m.marketing_campaign_id::text || ':' || p.occurrence, m.channel,
		   pg_catalog.jsonb_build_object('marketing_campaign_id', m.marketing_campaign_id,
			   'occurrence', p.occurrence, 'variant', p.variant, 'offer_kind', 'code', 'code', p.code::text),
		   as_of
	FROM p;
	RETURN false;
END;
$$;

COMMENT ON FUNCTION loyalty._publish_codes(loyalty.marketing_campaign, bigint, text, bigint, timestamptz, boolean) IS
	'Internal: publish bound codes of one coupon campaign and pattern to the staged customers (codes, publications, outbox in one statement); true when a plain round published them all';

/* Public codes, bonus points or a message only, to the staged customers of one offer. */
CREATE FUNCTION loyalty._publish_other(m loyalty.marketing_campaign, offer_kind text, coupon_campaign_id bigint,
									   public_code text, bonus_points bigint, as_of timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	code loyalty.coupon_code := CASE WHEN offer_kind = 'public_code' THEN loyalty.vanity_code(public_code) END;
BEGIN
	WITH src AS MATERIALIZED (
		SELECT s.customer_id, s.occurrence, s.variant,
			   CASE WHEN offer_kind = 'points'
					THEN 'mc:' || m.marketing_campaign_id::text || ':' || s.customer_id || ':' || s.occurrence END AS ref
		FROM pg_temp._loyalty_stage s
		WHERE s.reason IS NULL AND s.offer_kind = _publish_other.offer_kind
		  AND s.coupon_campaign_id IS NOT DISTINCT FROM _publish_other.coupon_campaign_id
		  AND s.public_code IS NOT DISTINCT FROM _publish_other.public_code
		  AND s.bonus_points IS NOT DISTINCT FROM _publish_other.bonus_points
	), e AS MATERIALIZED (
		SELECT src.*, CASE WHEN src.ref IS NOT NULL THEN
				(loyalty.points_earn(src.customer_id, src.ref, bonus_points,
									 reason => 'marketing campaign ' || m.name, qualifying => false)).entry_id
			   END AS entry_id
		FROM src
	), p AS (
		INSERT INTO loyalty.campaign_publication (customer_id, marketing_campaign_id, occurrence, variant,
			channel, published_at, offer_kind, coupon_campaign_id, code, bonus_points, points_reference)
		SELECT e.customer_id, m.marketing_campaign_id, e.occurrence, e.variant, m.channel, as_of,
			   offer_kind, coupon_campaign_id, code,
			   CASE WHEN offer_kind = 'points' THEN bonus_points END, e.ref
		FROM e
		RETURNING customer_id, occurrence, variant
	)
	INSERT INTO loyalty.outbox (customer_id, kind, event_key, channel, payload, created_at)
	SELECT p.customer_id, 'offer', m.marketing_campaign_id::text || ':' || p.occurrence, m.channel,
		   pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('marketing_campaign_id', m.marketing_campaign_id,
			   'occurrence', p.occurrence, 'variant', p.variant, 'offer_kind', offer_kind,
			   'code', code::text, 'bonus_points', CASE WHEN offer_kind = 'points' THEN bonus_points END)),
		   as_of
	FROM p;
END;
$$;

COMMENT ON FUNCTION loyalty._publish_other(loyalty.marketing_campaign, text, bigint, text, bigint, timestamptz) IS
	'Internal: publish a public code, bonus points (ledger reference mc:<campaign>:<customer>:<occurrence>, idempotent) or a message to the staged customers of one offer';

CREATE FUNCTION loyalty.publish_marketing_campaign(marketing_campaign_id bigint,
												   as_of timestamptz DEFAULT pg_catalog.now())
RETURNS TABLE (outcome text, customers bigint)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
#variable_conflict use_variable
DECLARE
	kind text;
	q text;
	keys text[];
BEGIN
	SELECT c.audience_kind, c.audience->>'query' INTO kind, q
	FROM loyalty.marketing_campaign c WHERE c.marketing_campaign_id = publish_marketing_campaign.marketing_campaign_id;
	IF kind = 'query' THEN
		keys := ARRAY(SELECT loyalty._audience_query(q));
	END IF;
	RETURN QUERY SELECT * FROM loyalty._publish(marketing_campaign_id, as_of, keys, false);
END;
$$;

COMMENT ON FUNCTION loyalty.publish_marketing_campaign(bigint, timestamptz) IS
	'Publish a marketing campaign as of a time: offer its audience what it offers (idempotent per customer and occurrence), log publications and filtered-out customers; returns the count per outcome (published or the filter reason); a query audience runs with the caller''s rights';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.publish_marketing_campaign(bigint, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty._publish(bigint, timestamptz, text[], boolean)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty._audience_query(text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.preview_audience(marketing_campaign_id bigint,
										 as_of timestamptz DEFAULT pg_catalog.now())
RETURNS TABLE (outcome text, customers bigint)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
#variable_conflict use_variable
DECLARE
	kind text;
	q text;
	keys text[];
BEGIN
	SELECT c.audience_kind, c.audience->>'query' INTO kind, q
	FROM loyalty.marketing_campaign c WHERE c.marketing_campaign_id = preview_audience.marketing_campaign_id;
	IF kind = 'query' THEN
		keys := ARRAY(SELECT loyalty._audience_query(q));
	END IF;
	RETURN QUERY SELECT * FROM loyalty._publish(marketing_campaign_id, as_of, keys, true);
END;
$$;

COMMENT ON FUNCTION loyalty.preview_audience(bigint, timestamptz) IS
	'The audience funnel of a marketing campaign as of a time, without publishing anything: customers per outcome (published = would be offered)';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.preview_audience(bigint, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* procedures: jobs (safe from pg_cron at any frequency) */

/*
 * Publish every active scheduled campaign of the given audience kinds (all
 * when NULL) as of a time; returns the customers published.  Idempotent:
 * what a run published, the next run finds already offered.
 */
CREATE FUNCTION loyalty._run_scheduled(as_of timestamptz, kinds text[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
#variable_conflict use_variable
DECLARE
	c record;
	total bigint := 0;
	n bigint;
BEGIN
	as_of := coalesce(as_of, pg_catalog.now());
	FOR c IN
		SELECT m.marketing_campaign_id FROM loyalty.marketing_campaign m
		WHERE m.schedule = 'scheduled' AND NOT m.paused
		  AND (m.starts_at IS NULL OR m.starts_at <= as_of) AND (m.ends_at IS NULL OR m.ends_at > as_of)
		  AND (kinds IS NULL OR m.audience_kind = ANY (kinds))
		ORDER BY m.marketing_campaign_id
	LOOP
		SELECT coalesce(sum(r.customers), 0) INTO n
		FROM loyalty.publish_marketing_campaign(c.marketing_campaign_id, as_of) r WHERE r.outcome = 'published';
		total := total + n;
	END LOOP;
	RETURN total;
END;
$$;

COMMENT ON FUNCTION loyalty._run_scheduled(timestamptz, text[]) IS
	'Internal: publish the active scheduled marketing campaigns of some audience kinds (all: NULL) as of a time';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty._run_scheduled(timestamptz, text[])'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE PROCEDURE loyalty.run_campaigns(as_of timestamptz DEFAULT NULL)
LANGUAGE plpgsql SECURITY INVOKER
AS $$
BEGIN
	PERFORM loyalty._run_scheduled(as_of, NULL);
END;
$$;

COMMENT ON PROCEDURE loyalty.run_campaigns(timestamptz) IS
	'Publish every active scheduled marketing campaign as of as_of (default now); safe to run from pg_cron at any frequency (idempotent, catches up)';

REVOKE EXECUTE ON PROCEDURE loyalty.run_campaigns(timestamptz) FROM PUBLIC;
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.run_campaigns(timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE PROCEDURE loyalty.run_welcome_campaigns(as_of timestamptz DEFAULT NULL)
LANGUAGE plpgsql SECURITY INVOKER
AS $$
BEGIN
	PERFORM loyalty._run_scheduled(as_of, ARRAY['welcome']);
END;
$$;

COMMENT ON PROCEDURE loyalty.run_welcome_campaigns(timestamptz) IS
	'Publish the scheduled welcome campaigns (customers whose signup day is within the audience''s within_days, default 7)';

REVOKE EXECUTE ON PROCEDURE loyalty.run_welcome_campaigns(timestamptz) FROM PUBLIC;
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.run_welcome_campaigns(timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE PROCEDURE loyalty.run_birthday_campaigns(as_of timestamptz DEFAULT NULL)
LANGUAGE plpgsql SECURITY INVOKER
AS $$
BEGIN
	PERFORM loyalty._run_scheduled(as_of, ARRAY['birthday']);
END;
$$;

COMMENT ON PROCEDURE loyalty.run_birthday_campaigns(timestamptz) IS
	'Publish the scheduled birthday campaigns: once a year per customer, on the birthday in the program time zone (February 29: February 28 in non-leap years), catching up catch_up_days (default 7)';

REVOKE EXECUTE ON PROCEDURE loyalty.run_birthday_campaigns(timestamptz) FROM PUBLIC;
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.run_birthday_campaigns(timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE PROCEDURE loyalty.run_anniversary_campaigns(as_of timestamptz DEFAULT NULL)
LANGUAGE plpgsql SECURITY INVOKER
AS $$
BEGIN
	PERFORM loyalty._run_scheduled(as_of, ARRAY['anniversary']);
END;
$$;

COMMENT ON PROCEDURE loyalty.run_anniversary_campaigns(timestamptz) IS
	'Publish the scheduled signup-anniversary campaigns: once a year per customer from the first anniversary on';

REVOKE EXECUTE ON PROCEDURE loyalty.run_anniversary_campaigns(timestamptz) FROM PUBLIC;
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.run_anniversary_campaigns(timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE PROCEDURE loyalty.run_reactivation_campaigns(as_of timestamptz DEFAULT NULL)
LANGUAGE plpgsql SECURITY INVOKER
AS $$
BEGIN
	PERFORM loyalty._run_scheduled(as_of, ARRAY['dormant', 'segment_entered']);
END;
$$;

COMMENT ON PROCEDURE loyalty.run_reactivation_campaigns(timestamptz) IS
	'Publish the scheduled reactivation campaigns (dormant N days: once per dormancy episode; segment_entered: once per transition)';

REVOKE EXECUTE ON PROCEDURE loyalty.run_reactivation_campaigns(timestamptz) FROM PUBLIC;
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.run_reactivation_campaigns(timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE PROCEDURE loyalty.run_abandoned_cart_campaigns(as_of timestamptz DEFAULT NULL)
LANGUAGE plpgsql SECURITY INVOKER
AS $$
BEGIN
	PERFORM loyalty._run_scheduled(as_of, ARRAY['abandoned_cart']);
END;
$$;

COMMENT ON PROCEDURE loyalty.run_abandoned_cart_campaigns(timestamptz) IS
	'Publish the scheduled abandoned-cart campaigns: once per open cart untouched for the audience''s after (default 1 hour) and younger than max_age (default 7 days)';

REVOKE EXECUTE ON PROCEDURE loyalty.run_abandoned_cart_campaigns(timestamptz) FROM PUBLIC;
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.run_abandoned_cart_campaigns(timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* ---------------------------------------------------------------------------
 * campaign_outbox.sql: the outbox the shop's mailer consumes
 *
 * Producers: publications (offers with their channel, campaign_publish.sql),
 * tier changes (a trigger on loyalty.tier_history), points-expiry warnings
 * (queue_expiry_warnings).  Each event has one row: offers through their
 * publication's primary key, the others through the unique
 * (customer_id, kind, event_key).  A consumer, in one transaction:
 *   SELECT * FROM loyalty.outbox_claim(100);   -- FOR UPDATE SKIP LOCKED
 *   ... send ...
 *   SELECT loyalty.outbox_ack(ARRAY[...]);     -- by outbox_id
 *   COMMIT;
 * Concurrent consumers get disjoint batches; a consumer that dies before
 * its commit releases its rows to the next one.  Every insert sends one
 * NOTIFY loyalty_outbox, delivered at commit.
 * ------------------------------------------------------------------------ */

CREATE FUNCTION loyalty._outbox_notify()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM pg_catalog.pg_notify('loyalty_outbox'::pg_catalog.text, ''::pg_catalog.text);
	RETURN NULL;
END;
$$;

COMMENT ON FUNCTION loyalty._outbox_notify() IS
	'Internal trigger: NOTIFY loyalty_outbox (delivered at commit) when events were queued';

CREATE TRIGGER outbox_notify
	AFTER INSERT ON loyalty.outbox
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._outbox_notify();

COMMENT ON TRIGGER outbox_notify ON loyalty.outbox IS
	'One NOTIFY loyalty_outbox per inserting statement, delivered when the transaction commits';

CREATE FUNCTION loyalty._outbox_tier_change()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	INSERT INTO loyalty.outbox (customer_id, kind, event_key, channel, payload, created_at)
	VALUES (NEW.customer_id, 'tier_change', NEW.history_id::pg_catalog.text, NULL,
			pg_catalog.jsonb_build_object('from_tier', NEW.from_tier, 'to_tier', NEW.to_tier,
										  'change', NEW.change, 'changed_at', NEW.changed_at),
			NEW.changed_at)
	ON CONFLICT (customer_id, kind, event_key) WHERE kind <> 'offer' DO NOTHING;
	RETURN NULL;
END;
$$;

COMMENT ON FUNCTION loyalty._outbox_tier_change() IS
	'Internal trigger: queue a tier_change event for every row of loyalty.tier_history';

CREATE TRIGGER tier_history_outbox
	AFTER INSERT ON loyalty.tier_history
	FOR EACH ROW EXECUTE FUNCTION loyalty._outbox_tier_change();

COMMENT ON TRIGGER tier_history_outbox ON loyalty.tier_history IS
	'Queues each tier change (upgrade, downgrade, refund, initial) in loyalty.outbox';

CREATE FUNCTION loyalty.queue_expiry_warnings(as_of timestamptz DEFAULT pg_catalog.now(),
											  within interval DEFAULT '14 days')
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	n bigint;
BEGIN
	IF as_of IS NULL OR within IS NULL THEN
		RAISE EXCEPTION 'as_of and within must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	INSERT INTO loyalty.outbox (customer_id, kind, event_key, channel, payload, created_at)
	SELECT l.customer_id, 'points_expiry', pg_catalog.to_char(loyalty._campaign_local_date(l.expires_at), 'YYYY-MM-DD'), NULL,
		   pg_catalog.jsonb_build_object('points', sum(l.remaining), 'expires_on',
										 loyalty._campaign_local_date(l.expires_at), 'first_expiry', min(l.expires_at)),
		   as_of
	FROM loyalty.points_lot l
	WHERE l.state <> 'closed' AND l.remaining > 0 AND l.expires_at > as_of AND l.expires_at <= as_of + within
	GROUP BY l.customer_id, loyalty._campaign_local_date(l.expires_at)
	ON CONFLICT (customer_id, kind, event_key) WHERE kind <> 'offer' DO NOTHING;
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END;
$$;

COMMENT ON FUNCTION loyalty.queue_expiry_warnings(timestamptz, interval) IS
	'Queue one points_expiry event per customer and expiry day (program time zone) for points expiring within the interval after as_of; a day already queued is not queued again';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.queue_expiry_warnings(timestamptz, interval)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.outbox_claim(batch_size integer DEFAULT 100)
RETURNS SETOF loyalty.outbox
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF batch_size IS NULL OR batch_size < 1 THEN
		RAISE EXCEPTION 'batch_size must be at least 1' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	RETURN QUERY
		SELECT o.* FROM loyalty.outbox o
		WHERE o.acked_at IS NULL
		ORDER BY o.outbox_id
		LIMIT batch_size
		FOR UPDATE SKIP LOCKED;
END;
$$;

COMMENT ON FUNCTION loyalty.outbox_claim(integer) IS
	'Claim up to batch_size pending outbox events, oldest first, locked until the end of the transaction (FOR UPDATE SKIP LOCKED: concurrent consumers get disjoint batches); acknowledge them with outbox_ack in the same transaction';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.outbox_claim(integer)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.outbox_ack(outbox_ids bigint[], at timestamptz DEFAULT pg_catalog.now())
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint;
BEGIN
	UPDATE loyalty.outbox o SET acked_at = outbox_ack.at
	WHERE o.outbox_id = ANY (outbox_ack.outbox_ids) AND o.acked_at IS NULL;
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END;
$$;

COMMENT ON FUNCTION loyalty.outbox_ack(bigint[], timestamptz) IS
	'Acknowledge outbox events by id: they are never claimed again; returns how many were pending';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.outbox_ack(bigint[], timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* ---------------------------------------------------------------------------
 * Last: nothing for PUBLIC, then the recorded access levels re-applied to
 * every object (grants.sql of the install script, then reapply_grants).
 * ------------------------------------------------------------------------ */
REVOKE ALL ON SCHEMA loyalty FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA loyalty FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA loyalty FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA loyalty FROM PUBLIC;

SELECT loyalty.reapply_grants();
