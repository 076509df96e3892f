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

-- Issue 16, customer lifetime value: the clv family (src/clv/clv.sql, as
-- in the install script) and the live tracking's all-time order days,
-- first order day and its spend (src/rfm_live/rfm_track.sql).  Existing
-- rows get them from their day buckets: exact for customers whose first
-- order lies within bucket_retention; for older customers
-- loyalty.rebuild_tracking() recomputes them from the tracked tables
-- (doc/clv.md, "Live summaries").

CREATE FUNCTION loyalty._rfm_days_tally(loyalty.day_buckets, loyalty.day_buckets,
	bigint, date, numeric,
	OUT order_days bigint, OUT first_day date, OUT first_day_spend numeric)
RETURNS record
AS 'MODULE_PATHNAME', 'rfm_days_tally'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_days_tally(loyalty.day_buckets, loyalty.day_buckets, bigint, date, numeric) IS
	'Internal: all-time order days and first order day with its spend after a change of the day buckets from old to merged';

ALTER TABLE loyalty.customer_stats
	ADD COLUMN order_days bigint NOT NULL DEFAULT 0,
	ADD COLUMN first_day date,
	ADD COLUMN first_day_spend numeric;

COMMENT ON COLUMN loyalty.customer_stats.order_days IS
	'Days (tracking time zone) with at least one order, all time: gained and lost as the day buckets change, kept when buckets are pruned';
COMMENT ON COLUMN loyalty.customer_stats.first_day IS
	'First day (tracking time zone) with an order, as the day buckets last showed it';
COMMENT ON COLUMN loyalty.customer_stats.first_day_spend IS
	'Spend of first_day (orders and refunds of that day): the part of spend_total that is not repeat spend (CLV)';

UPDATE loyalty.customer_stats AS s
SET (order_days, first_day, first_day_spend) =
	(SELECT t.* FROM loyalty._rfm_days_tally(NULL, s.days, 0, NULL, NULL) AS t)
WHERE s.days IS NOT NULL;

/* ---------------------------------------------------------------------------
 * clv.sql: customer lifetime value, BG/NBD and Gamma-Gamma (doc/clv.md)
 *
 * Summaries per customer (x repeat purchase periods, t_x recency, T age,
 * mean repeat spend) in batch from any orders table (clv_summary) or from
 * the live statistics (clv_summary_live); their sufficient statistics in
 * the parallel-safe aggregate clv_stats; fits in C (clv_fit, clv_fit_live)
 * stored as named rows of clv_model; scoring functions reading a stored
 * model; the analyst view clv_customers and the audience function
 * clv_slipping_away ("valuable but slipping away").
 * ------------------------------------------------------------------------ */

/* tables */

/*
 * Fitted models: configuration-like (a few rows, no customer key, no
 * trigger): a Citus reference table.  The CHECKs keep a NaN or infinite
 * parameter out whatever writes the row.
 */
CREATE TABLE loyalty.clv_model (
	model_name			text PRIMARY KEY
		CHECK (pg_catalog.length(model_name) BETWEEN 1 AND 100),
	fitted_at			timestamptz NOT NULL DEFAULT pg_catalog.now(),
	source				text NOT NULL,
	as_of				timestamptz NOT NULL,
	purchase_unit		text NOT NULL CHECK (purchase_unit IN ('day', 'week')),
	time_unit			text NOT NULL CHECK (time_unit IN ('days', 'weeks')),
	first_period		date,
	last_period			date,
	penalizer			double precision NOT NULL CHECK (penalizer >= 0 AND penalizer < 'Infinity'),
	customers			bigint NOT NULL,
	repeat_customers	bigint NOT NULL,
	distinct_triples	bigint NOT NULL,
	r					double precision NOT NULL CHECK (r > 0 AND r < 'Infinity'),
	alpha				double precision NOT NULL CHECK (alpha > 0 AND alpha < 'Infinity'),
	a					double precision NOT NULL CHECK (a > 0 AND a < 'Infinity'),
	b					double precision NOT NULL CHECK (b > 0 AND b < 'Infinity'),
	bgnbd_loglik		double precision NOT NULL CHECK (bgnbd_loglik < 'Infinity'),
	bgnbd_iterations	integer NOT NULL,
	bgnbd_status		text NOT NULL,
	r_se				double precision,
	alpha_se			double precision,
	a_se				double precision,
	b_se				double precision,
	p					double precision NOT NULL CHECK (p > 0 AND p < 'Infinity'),
	q					double precision NOT NULL CHECK (q > 0 AND q < 'Infinity'),
	v					double precision NOT NULL CHECK (v > 0 AND v < 'Infinity'),
	gamma_gamma_loglik	double precision NOT NULL CHECK (gamma_gamma_loglik < 'Infinity'),
	gamma_gamma_iterations integer NOT NULL,
	gamma_gamma_status	text NOT NULL,
	p_se				double precision,
	q_se				double precision,
	v_se				double precision
);

COMMENT ON TABLE loyalty.clv_model IS
	'Fitted BG/NBD + Gamma-Gamma models by name (loyalty.clv_fit / clv_fit_live): parameters, standard errors, fit statistics, data window, units, as_of';
COMMENT ON COLUMN loyalty.clv_model.model_name IS 'Name the scoring functions take; fitting again under a name replaces the model';
COMMENT ON COLUMN loyalty.clv_model.fitted_at IS 'When the model was fitted';
COMMENT ON COLUMN loyalty.clv_model.source IS 'What the summaries were computed from: the orders relation and its columns, or live tracking';
COMMENT ON COLUMN loyalty.clv_model.as_of IS 'Observation end: orders after it were ignored, ages run to it';
COMMENT ON COLUMN loyalty.clv_model.purchase_unit IS 'What counts as one purchase: a day or a week (Monday-based) with at least one order, program time zone';
COMMENT ON COLUMN loyalty.clv_model.time_unit IS 'Unit of recency, age, alpha and the horizons of the scoring functions: days or weeks';
COMMENT ON COLUMN loyalty.clv_model.first_period IS 'First purchase period of the data (start of the data window)';
COMMENT ON COLUMN loyalty.clv_model.last_period IS 'Last purchase period of the data up to as_of';
COMMENT ON COLUMN loyalty.clv_model.penalizer IS 'L2 penalty on the parameters (lifetimes'' penalizer_coef; 0: plain maximum likelihood)';
COMMENT ON COLUMN loyalty.clv_model.customers IS 'Customers with a first purchase up to as_of';
COMMENT ON COLUMN loyalty.clv_model.repeat_customers IS 'Customers with at least one repeat purchase period';
COMMENT ON COLUMN loyalty.clv_model.distinct_triples IS 'Distinct (x, t_x, T) summaries the BG/NBD fit iterated over';
COMMENT ON COLUMN loyalty.clv_model.r IS 'BG/NBD: shape of the gamma distribution of purchase rates';
COMMENT ON COLUMN loyalty.clv_model.alpha IS 'BG/NBD: scale of the gamma distribution of purchase rates, in time_unit';
COMMENT ON COLUMN loyalty.clv_model.a IS 'BG/NBD: beta distribution of the dropout probability, a';
COMMENT ON COLUMN loyalty.clv_model.b IS 'BG/NBD: beta distribution of the dropout probability, b';
COMMENT ON COLUMN loyalty.clv_model.bgnbd_loglik IS 'BG/NBD log-likelihood at the parameters (time in time_unit, unpenalised)';
COMMENT ON COLUMN loyalty.clv_model.bgnbd_iterations IS 'BFGS iterations of the BG/NBD fit';
COMMENT ON COLUMN loyalty.clv_model.bgnbd_status IS 'converged (gradient vanished, or no further decrease possible at the optimum) or max_iterations';
COMMENT ON COLUMN loyalty.clv_model.r_se IS 'Standard error of r (inverse Hessian; NULL: not positive definite)';
COMMENT ON COLUMN loyalty.clv_model.alpha_se IS 'Standard error of alpha';
COMMENT ON COLUMN loyalty.clv_model.a_se IS 'Standard error of a';
COMMENT ON COLUMN loyalty.clv_model.b_se IS 'Standard error of b';
COMMENT ON COLUMN loyalty.clv_model.p IS 'Gamma-Gamma: shape of the gamma distribution of a purchase''s spend';
COMMENT ON COLUMN loyalty.clv_model.q IS 'Gamma-Gamma: shape of the gamma prior of the spend scale (q > 1: finite mean spend)';
COMMENT ON COLUMN loyalty.clv_model.v IS 'Gamma-Gamma: scale of the gamma prior of the spend scale, in money';
COMMENT ON COLUMN loyalty.clv_model.gamma_gamma_loglik IS 'Gamma-Gamma log-likelihood of the repeat buyers with positive mean spend';
COMMENT ON COLUMN loyalty.clv_model.gamma_gamma_iterations IS 'BFGS iterations of the Gamma-Gamma fit';
COMMENT ON COLUMN loyalty.clv_model.gamma_gamma_status IS 'converged or max_iterations';
COMMENT ON COLUMN loyalty.clv_model.p_se IS 'Standard error of p';
COMMENT ON COLUMN loyalty.clv_model.q_se IS 'Standard error of q';
COMMENT ON COLUMN loyalty.clv_model.v_se IS 'Standard error of v';

SELECT pg_catalog.pg_extension_config_dump('loyalty.clv_model'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.clv_model'::pg_catalog.regclass, 'SELECT, INSERT, UPDATE, DELETE'::pg_catalog.text);
SELECT loyalty._register_relation('all'::pg_catalog.text, 'loyalty.clv_model'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/* functions: support of the clv_stats aggregate */

CREATE FUNCTION loyalty._clv_stats_trans(internal, bigint, double precision, double precision, double precision)
RETURNS internal
AS 'MODULE_PATHNAME', 'clv_stats_transfn'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._clv_stats_trans(internal, bigint, double precision, double precision, double precision) IS
	'Internal: transition function of loyalty.clv_stats';

CREATE FUNCTION loyalty._clv_stats_combine(internal, internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'clv_stats_combine'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._clv_stats_combine(internal, internal) IS
	'Internal: combine function of loyalty.clv_stats (parallel aggregation)';

CREATE FUNCTION loyalty._clv_stats_serial(internal)
RETURNS bytea
AS 'MODULE_PATHNAME', 'clv_stats_serialize'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._clv_stats_serial(internal) IS
	'Internal: serialize function of loyalty.clv_stats (parallel aggregation)';

CREATE FUNCTION loyalty._clv_stats_deserial(bytea, internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'clv_stats_deserialize'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._clv_stats_deserial(bytea, internal) IS
	'Internal: deserialize function of loyalty.clv_stats (parallel aggregation)';

CREATE FUNCTION loyalty._clv_stats_final(internal)
RETURNS bytea
AS 'MODULE_PATHNAME', 'clv_stats_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._clv_stats_final(internal) IS
	'Internal: final function of loyalty.clv_stats';

/* aggregates */

CREATE AGGREGATE loyalty.clv_stats(frequency bigint, recency double precision, age double precision, monetary_value double precision) (
	SFUNC = loyalty._clv_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._clv_stats_final,
	COMBINEFUNC = loyalty._clv_stats_combine,
	SERIALFUNC = loyalty._clv_stats_serial,
	DESERIALFUNC = loyalty._clv_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.clv_stats(bigint, double precision, double precision, double precision) IS
	'Sufficient statistics of BG/NBD and Gamma-Gamma over customer summaries: distinct (x, t_x, T) and (x, mean spend) with counts, as bytea for loyalty.clv_fit_stats';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.clv_stats(bigint, double precision, double precision, double precision)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* functions: statistics and fits */

CREATE FUNCTION loyalty.clv_stats_info(stats bytea,
	OUT customers bigint, OUT distinct_triples bigint, OUT distinct_spend_pairs bigint,
	OUT spend_customers bigint, OUT spend_excluded bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'clv_stats_info'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.clv_stats_info(bytea) IS
	'What clv_stats collected: customers, distinct (x, t_x, T) triples, distinct (x, spend) pairs, repeat buyers kept for Gamma-Gamma and left out (mean spend <= 0)';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.clv_stats_info(bytea)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.clv_fit_stats(stats bytea, penalizer double precision DEFAULT 0,
	OUT r double precision, OUT alpha double precision, OUT a double precision, OUT b double precision,
	OUT bgnbd_loglik double precision, OUT bgnbd_iterations integer, OUT bgnbd_status text,
	OUT r_se double precision, OUT alpha_se double precision, OUT a_se double precision, OUT b_se double precision,
	OUT p double precision, OUT q double precision, OUT v double precision,
	OUT gamma_gamma_loglik double precision, OUT gamma_gamma_iterations integer, OUT gamma_gamma_status text,
	OUT p_se double precision, OUT q_se double precision, OUT v_se double precision,
	OUT customers bigint, OUT repeat_customers bigint, OUT distinct_triples bigint, OUT max_age double precision)
RETURNS record
AS 'MODULE_PATHNAME', 'clv_fit_stats'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.clv_fit_stats(bytea, double precision) IS
	'Fit BG/NBD and Gamma-Gamma to statistics of loyalty.clv_stats (BFGS on log-parameters, time scaled to max age 1, optional L2 penalizer); reason-coded LV0nn errors for data that cannot be fitted';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.clv_fit_stats(bytea, double precision)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* types */

CREATE TYPE loyalty.clv_customer_summary AS (
	frequency		bigint,			-- repeat purchase periods (x)
	recency			double precision,	-- last purchase period - first (t_x)
	age				double precision,	-- as_of's period - first (T)
	monetary_value	numeric,		-- mean spend of the repeat periods
	first_period	date,
	last_period		date
);

COMMENT ON TYPE loyalty.clv_customer_summary IS
	'One customer''s CLV summary: result of loyalty._clv_customer';

CREATE FUNCTION loyalty._clv_customer_trans(internal, timestamptz, numeric, timestamptz, text, text)
RETURNS internal
AS 'MODULE_PATHNAME', 'clv_customer_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._clv_customer_trans(internal, timestamptz, numeric, timestamptz, text, text) IS
	'Internal: transition function of loyalty._clv_customer';

CREATE FUNCTION loyalty._clv_customer_final(internal, timestamptz, numeric, timestamptz, text, text)
RETURNS loyalty.clv_customer_summary
AS 'MODULE_PATHNAME', 'clv_customer_final'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._clv_customer_final(internal, timestamptz, numeric, timestamptz, text, text) IS
	'Internal: final function of loyalty._clv_customer';

/*
 * One customer's CLV summary from their order rows (src/clv/clv_summary.c):
 * purchase periods of the program time zone, exact spend.  Used by
 * clv_summary and clv_fit with GROUP BY customer.
 */
CREATE AGGREGATE loyalty._clv_customer(ordered_at timestamptz, amount numeric, as_of timestamptz, unit text, period text) (
	SFUNC = loyalty._clv_customer_trans,
	STYPE = internal,
	FINALFUNC = loyalty._clv_customer_final,
	FINALFUNC_EXTRA,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty._clv_customer(timestamptz, numeric, timestamptz, text, text) IS
	'Internal: one customer''s CLV summary (frequency, recency, age, mean repeat spend, first and last period) from their orders';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty._clv_customer(timestamptz, numeric, timestamptz, text, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * The summary query over an orders relation: $1 = as_of, $2 = program time
 * zone.  Identifiers are quoted with format(%I), unit and period (checked
 * against their lists) with %L.  One GROUP BY customer (native key type,
 * text at the end) with loyalty._clv_customer; rules in clv_summary.c.
 */
CREATE FUNCTION loyalty._clv_summary_sql(orders regclass, customer_column name,
	ordered_at_column name, amount_column name, unit text, period text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	ttype regtype;
	time_expr text;
	until text;
BEGIN
	IF orders IS NULL OR customer_column IS NULL OR ordered_at_column IS NULL OR amount_column IS NULL THEN
		RAISE EXCEPTION 'orders, customer_column, ordered_at_column and amount_column must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF unit IS NULL OR unit NOT IN ('day', 'week') THEN
		RAISE EXCEPTION 'invalid unit: "%"', unit
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Valid units are day and week.';
	END IF;
	IF period IS NULL OR period NOT IN ('days', 'weeks') THEN
		RAISE EXCEPTION 'invalid period: "%"', period
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Valid periods are days and weeks.';
	END IF;
	SELECT a.atttypid::regtype INTO ttype FROM pg_attribute a
	WHERE a.attrelid = orders AND a.attname = ordered_at_column AND a.attnum > 0 AND NOT a.attisdropped;
	IF ttype IS NULL THEN
		RAISE EXCEPTION 'column "%" of relation % does not exist', ordered_at_column, orders
			USING ERRCODE = 'undefined_column';
	END IF;
	PERFORM 1 FROM pg_attribute a
	WHERE a.attrelid = orders AND a.attname IN (customer_column, amount_column)
	  AND a.attnum > 0 AND NOT a.attisdropped
	HAVING count(DISTINCT a.attname) = (CASE WHEN customer_column = amount_column THEN 1 ELSE 2 END);
	IF NOT FOUND THEN
		RAISE EXCEPTION 'column "%" or "%" of relation % does not exist', customer_column, amount_column, orders
			USING ERRCODE = 'undefined_column';
	END IF;
	IF ttype = 'timestamp with time zone'::regtype THEN
		time_expr := format('o.%I', ordered_at_column);
		until := format('o.%I OPERATOR(pg_catalog.<=) $1', ordered_at_column);
	ELSIF ttype = 'timestamp without time zone'::regtype THEN
		time_expr := format('pg_catalog.timezone($2, o.%I)', ordered_at_column);
		until := format('o.%I OPERATOR(pg_catalog.<=) pg_catalog.timezone($2, $1)', ordered_at_column);
	ELSIF ttype = 'date'::regtype THEN
		time_expr := format('pg_catalog.timezone($2, o.%I::pg_catalog.timestamp)', ordered_at_column);
		until := format('o.%I OPERATOR(pg_catalog.<=) pg_catalog.timezone($2, $1)::pg_catalog.date', ordered_at_column);
	ELSE
		RAISE EXCEPTION 'column "%" of relation % has type %, not timestamptz, timestamp or date', ordered_at_column, orders, ttype
			USING ERRCODE = 'datatype_mismatch';
	END IF;
	RETURN format($q$
SELECT q.cid AS customer_id, (q.s).frequency, (q.s).recency, (q.s).age, (q.s).monetary_value,
	   (q.s).first_period, (q.s).last_period
FROM (SELECT o.%1$I::pg_catalog.text AS cid,
			 loyalty._clv_customer(%2$s, o.%3$I::pg_catalog.numeric, $1, %4$L, %5$L) AS s
	  FROM %6$s o
	  WHERE o.%1$I IS NOT NULL AND %7$s
	  GROUP BY o.%1$I) q
WHERE q.s IS DISTINCT FROM NULL$q$,
		customer_column, time_expr, amount_column, unit, period, orders, until);
END;
$$;

COMMENT ON FUNCTION loyalty._clv_summary_sql(regclass, name, name, name, text, text) IS
	'Internal: the query computing CLV summaries from an orders relation ($1 as_of, $2 time zone)';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty._clv_summary_sql(regclass, name, name, name, text, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* The program time zone (no settings row: UTC). */
CREATE FUNCTION loyalty._clv_zone()
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT COALESCE((SELECT s.timezone FROM loyalty.settings s), 'UTC')
$$;

COMMENT ON FUNCTION loyalty._clv_zone() IS
	'Internal: the program time zone of the CLV summaries';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty._clv_zone()'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * CLV summary of every customer of an orders relation as of a time, with
 * the caller's rights (SECURITY INVOKER).  Customers whose first order is
 * after as_of are absent; rows without customer or time are ignored.
 */
CREATE FUNCTION loyalty.clv_summary(
	orders regclass,
	customer_column name,
	ordered_at_column name,
	amount_column name,
	as_of timestamptz DEFAULT pg_catalog.now(),
	unit text DEFAULT 'day',
	period text DEFAULT 'days')
RETURNS TABLE (
	customer_id text,
	frequency bigint,
	recency double precision,
	age double precision,
	monetary_value numeric,
	first_period date,
	last_period date)
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF as_of IS NULL THEN
		RAISE EXCEPTION 'as_of must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	RETURN QUERY EXECUTE loyalty._clv_summary_sql(orders, customer_column, ordered_at_column, amount_column, unit, period)
		USING as_of, loyalty._clv_zone();
END;
$$;

COMMENT ON FUNCTION loyalty.clv_summary(regclass, name, name, name, timestamptz, text, text) IS
	'CLV summary per customer of an orders table or view as of a time: frequency x (repeat purchase periods), recency t_x, age T (in period units), mean repeat spend';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.clv_summary(regclass, name, name, name, timestamptz, text, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * Store a fit (clv_fit_stats' row) under a name, replacing a model of that
 * name.  Runs with the caller's rights: admins may write clv_model.
 */
CREATE FUNCTION loyalty._clv_store(model_name text, stats bytea, penalizer double precision,
	source text, as_of timestamptz, unit text, period text, first_period date, last_period date)
RETURNS loyalty.clv_model
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	f record;
	m loyalty.clv_model;
BEGIN
	IF model_name IS NULL THEN
		RAISE EXCEPTION 'model_name must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF stats IS NULL THEN
		RAISE EXCEPTION 'too few customers to fit a clv model'
			USING ERRCODE = 'LV001', DETAIL = '{"reason": "too_few_customers", "customers": 0}',
				  HINT = 'No customer has a first purchase up to as_of.';
	END IF;
	SELECT * INTO f FROM loyalty.clv_fit_stats(stats, penalizer);
	INSERT INTO loyalty.clv_model AS c (model_name, fitted_at, source, as_of, purchase_unit, time_unit,
		first_period, last_period, penalizer, customers, repeat_customers, distinct_triples,
		r, alpha, a, b, bgnbd_loglik, bgnbd_iterations, bgnbd_status, r_se, alpha_se, a_se, b_se,
		p, q, v, gamma_gamma_loglik, gamma_gamma_iterations, gamma_gamma_status, p_se, q_se, v_se)
	VALUES (model_name, pg_catalog.now(), source, as_of, unit, period,
		first_period, last_period, penalizer, f.customers, f.repeat_customers, f.distinct_triples,
		f.r, f.alpha, f.a, f.b, f.bgnbd_loglik, f.bgnbd_iterations, f.bgnbd_status, f.r_se, f.alpha_se, f.a_se, f.b_se,
		f.p, f.q, f.v, f.gamma_gamma_loglik, f.gamma_gamma_iterations, f.gamma_gamma_status, f.p_se, f.q_se, f.v_se)
	ON CONFLICT ON CONSTRAINT clv_model_pkey DO UPDATE SET
		fitted_at = excluded.fitted_at, source = excluded.source, as_of = excluded.as_of,
		purchase_unit = excluded.purchase_unit, time_unit = excluded.time_unit,
		first_period = excluded.first_period, last_period = excluded.last_period,
		penalizer = excluded.penalizer, customers = excluded.customers,
		repeat_customers = excluded.repeat_customers, distinct_triples = excluded.distinct_triples,
		r = excluded.r, alpha = excluded.alpha, a = excluded.a, b = excluded.b,
		bgnbd_loglik = excluded.bgnbd_loglik, bgnbd_iterations = excluded.bgnbd_iterations,
		bgnbd_status = excluded.bgnbd_status, r_se = excluded.r_se, alpha_se = excluded.alpha_se,
		a_se = excluded.a_se, b_se = excluded.b_se, p = excluded.p, q = excluded.q, v = excluded.v,
		gamma_gamma_loglik = excluded.gamma_gamma_loglik,
		gamma_gamma_iterations = excluded.gamma_gamma_iterations,
		gamma_gamma_status = excluded.gamma_gamma_status,
		p_se = excluded.p_se, q_se = excluded.q_se, v_se = excluded.v_se
	RETURNING * INTO m;
	RETURN m;
END;
$$;

COMMENT ON FUNCTION loyalty._clv_store(text, bytea, double precision, text, timestamptz, text, text, date, date) IS
	'Internal: fit statistics and store the model under a name (caller''s rights)';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty._clv_store(text, bytea, double precision, text, timestamptz, text, text, date, date)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * Fit both models on an orders relation and store them as model_name: one
 * statement, summary and statistics in one (parallel-capable) query, the
 * optimisation in C on the distinct triples.  Caller's rights.
 */
CREATE FUNCTION loyalty.clv_fit(
	model_name text,
	orders regclass,
	customer_column name,
	ordered_at_column name,
	amount_column name,
	as_of timestamptz DEFAULT pg_catalog.now(),
	unit text DEFAULT 'day',
	period text DEFAULT 'days',
	penalizer double precision DEFAULT 0)
RETURNS loyalty.clv_model
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	stats bytea;
	fp date;
	lp date;
BEGIN
	IF as_of IS NULL THEN
		RAISE EXCEPTION 'as_of must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	EXECUTE 'SELECT loyalty.clv_stats(s.frequency, s.recency, s.age, s.monetary_value::pg_catalog.float8),'
			' pg_catalog.min(s.first_period), pg_catalog.max(s.last_period) FROM ('
			|| loyalty._clv_summary_sql(orders, customer_column, ordered_at_column, amount_column, unit, period)
			|| ') s'
		INTO stats, fp, lp
		USING as_of, loyalty._clv_zone();
	RETURN loyalty._clv_store(model_name, stats, penalizer,
		pg_catalog.format('%s (%I, %I, %I)', orders, customer_column, ordered_at_column, amount_column),
		as_of, unit, period, fp, lp);
END;
$$;

COMMENT ON FUNCTION loyalty.clv_fit(text, regclass, name, name, name, timestamptz, text, text, double precision) IS
	'Fit BG/NBD and Gamma-Gamma on an orders table or view as of a time and store them as a named model (replacing one of that name)';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.clv_fit(text, regclass, name, name, name, timestamptz, text, text, double precision)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* functions: scoring */

CREATE FUNCTION loyalty.clv_p_alive(model_name text, frequency bigint, recency double precision, age double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'clv_p_alive'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.clv_p_alive(text, bigint, double precision, double precision) IS
	'BG/NBD probability that a customer (frequency, recency, age in the model''s time unit) is still active, from a stored model';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.clv_p_alive(text, bigint, double precision, double precision)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.clv_expected_purchases(model_name text, frequency bigint, recency double precision,
	age double precision, horizon double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'clv_expected_purchases'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.clv_expected_purchases(text, bigint, double precision, double precision, double precision) IS
	'BG/NBD expected purchases of a customer in the next horizon time units, from a stored model';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.clv_expected_purchases(text, bigint, double precision, double precision, double precision)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.clv_expected_spend(model_name text, frequency bigint, monetary_value numeric)
RETURNS numeric
AS 'MODULE_PATHNAME', 'clv_expected_spend'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.clv_expected_spend(text, bigint, numeric) IS
	'Gamma-Gamma expected spend per future purchase of a customer (frequency, mean repeat spend), rounded to 2 decimals; NULL when the model has q <= 1';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.clv_expected_spend(text, bigint, numeric)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.clv_value(model_name text, frequency bigint, recency double precision,
	age double precision, monetary_value numeric,
	months integer DEFAULT 12, discount_rate double precision DEFAULT 0.01)
RETURNS numeric
AS 'MODULE_PATHNAME', 'clv_value'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.clv_value(text, bigint, double precision, double precision, numeric, integer, double precision) IS
	'Customer lifetime value over the next months (expected purchases per month times expected spend, discounted monthly at discount_rate, as lifetimes), rounded to 2 decimals';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.clv_value(text, bigint, double precision, double precision, numeric, integer, double precision)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* functions: live summaries (tracked orders, src/rfm_live) */

/*
 * CLV summary of every tracked customer from loyalty.customer_stats as of
 * its last fold: x = order_days - 1 (all-time days with an order), t_x and
 * T from first_day (tracking zone) to the day of last_order and of as_of,
 * mean repeat spend = (spend_total - first_day_spend) / x.  SECURITY
 * DEFINER: analysts read it without reading customer_stats.
 */
CREATE FUNCTION loyalty.clv_summary_live(
	as_of timestamptz DEFAULT pg_catalog.now(),
	period text DEFAULT 'days')
RETURNS TABLE (
	customer_id text,
	frequency bigint,
	recency double precision,
	age double precision,
	monetary_value numeric,
	first_period date,
	last_period date,
	spend_total numeric)
LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	zone text := loyalty._clv_zone();
	asof_day date;
	k double precision;
BEGIN
	IF as_of IS NULL THEN
		RAISE EXCEPTION 'as_of must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF period IS NULL OR period NOT IN ('days', 'weeks') THEN
		RAISE EXCEPTION 'invalid period: "%"', period
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Valid periods are days and weeks.';
	END IF;
	asof_day := timezone(zone, as_of)::date;
	k := CASE period WHEN 'weeks' THEN 7.0 ELSE 1.0 END;
	RETURN QUERY
	SELECT s.customer_id::text,
		   s.order_days - 1,
		   CASE WHEN s.order_days > 1 THEN
			   GREATEST(0, LEAST(timezone(zone, s.last_order)::date, asof_day) - s.first_day)::float8 / k
		   ELSE 0 END,
		   (asof_day - s.first_day)::float8 / k,
		   CASE WHEN s.order_days > 1 THEN
			   (s.spend_total - COALESCE(s.first_day_spend, 0)) / (s.order_days - 1)
		   END,
		   s.first_day,
		   LEAST(timezone(zone, s.last_order)::date, asof_day),
		   s.spend_total
	FROM loyalty.customer_stats s
	WHERE s.order_days > 0 AND s.first_day <= asof_day AND s.last_order IS NOT NULL;
END;
$$;

COMMENT ON FUNCTION loyalty.clv_summary_live(timestamptz, text) IS
	'CLV summary per tracked customer from the live statistics (as of their last fold): frequency, recency, age (days or weeks), mean repeat spend, all-time spend';

SELECT loyalty._register_function('analyst'::pg_catalog.text, 'loyalty.clv_summary_live(timestamptz, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* Fit both models on the live statistics and store them as model_name. */
CREATE FUNCTION loyalty.clv_fit_live(
	model_name text,
	as_of timestamptz DEFAULT pg_catalog.now(),
	period text DEFAULT 'days',
	penalizer double precision DEFAULT 0)
RETURNS loyalty.clv_model
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	stats bytea;
	fp date;
	lp date;
BEGIN
	SELECT loyalty.clv_stats(s.frequency, s.recency, s.age, s.monetary_value::float8),
		   min(s.first_period), max(s.last_period)
	INTO stats, fp, lp
	FROM loyalty.clv_summary_live(as_of, period) s;
	RETURN loyalty._clv_store(model_name, stats, penalizer, 'live tracking (loyalty.customer_stats)',
		as_of, 'day', period, fp, lp);
END;
$$;

COMMENT ON FUNCTION loyalty.clv_fit_live(text, timestamptz, text, double precision) IS
	'Fit BG/NBD and Gamma-Gamma on the live statistics of the tracked orders and store them as a named model';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.clv_fit_live(text, timestamptz, text, double precision)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * "Valuable but slipping away": the repeat buyers in the top top_share of
 * all-time spend (ties share their rank: cume_dist) whose P(alive) under
 * the model is below max_p_alive, most valuable first.  customer_id first:
 * usable as a campaign audience.
 */
CREATE FUNCTION loyalty.clv_slipping_away(
	model_name text,
	max_p_alive double precision DEFAULT 0.5,
	top_share double precision DEFAULT 0.2,
	as_of timestamptz DEFAULT pg_catalog.now())
RETURNS TABLE (
	customer_id text,
	segment text,
	spend_total numeric,
	frequency bigint,
	recency double precision,
	age double precision,
	p_alive double precision,
	clv_12m numeric)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	unit text;
	tunit text;
BEGIN
	IF max_p_alive IS NULL OR NOT (max_p_alive >= 0 AND max_p_alive <= 1) THEN
		RAISE EXCEPTION 'max_p_alive must lie between 0 and 1' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF top_share IS NULL OR NOT (top_share > 0 AND top_share <= 1) THEN
		RAISE EXCEPTION 'top_share must lie in (0, 1]' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT m.purchase_unit, m.time_unit INTO unit, tunit
	FROM loyalty.clv_model m WHERE m.model_name = clv_slipping_away.model_name;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'clv model "%" does not exist', model_name
			USING ERRCODE = 'LV007',
				  DETAIL = format('{"reason": "unknown_model", "model": %s}', to_json(model_name)),
				  HINT = 'Fit one with loyalty.clv_fit().';
	END IF;
	IF unit <> 'day' THEN
		RAISE EXCEPTION 'clv model "%" counts weeks, the live statistics count days', model_name
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	RETURN QUERY
	SELECT v.customer_id, g.segment, v.spend_total, v.frequency, v.recency, v.age, v.p_alive,
		   loyalty.clv_value(clv_slipping_away.model_name, v.frequency, v.recency, v.age, v.monetary_value)
	FROM (SELECT s.*, cume_dist() OVER (ORDER BY s.spend_total DESC) AS share,
				 loyalty.clv_p_alive(clv_slipping_away.model_name, s.frequency, s.recency, s.age) AS p_alive
		  FROM loyalty.clv_summary_live(as_of, tunit) s
		  WHERE s.frequency > 0) v
	LEFT JOIN loyalty.customer_segment g ON g.customer_id = v.customer_id
	WHERE v.share <= top_share AND v.p_alive < max_p_alive
	ORDER BY v.spend_total DESC, v.customer_id;
END;
$$;

COMMENT ON FUNCTION loyalty.clv_slipping_away(text, double precision, double precision, timestamptz) IS
	'Valuable but slipping away: repeat buyers in the top share of all-time spend whose P(alive) is below max_p_alive (campaign audience: customer_id first)';

SELECT loyalty._register_function('analyst'::pg_catalog.text, 'loyalty.clv_slipping_away(text, double precision, double precision, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* views */

CREATE VIEW loyalty.clv_customers AS
SELECT s.customer_id, g.segment, g.score, m.model_name,
	   s.frequency, s.recency, s.age, s.monetary_value, s.spend_total,
	   loyalty.clv_p_alive(m.model_name, s.frequency, s.recency, s.age) AS p_alive,
	   loyalty.clv_expected_purchases(m.model_name, s.frequency, s.recency, s.age,
		   12 * CASE m.time_unit WHEN 'weeks' THEN 4.345 ELSE 30 END) AS expected_purchases_12m,
	   loyalty.clv_expected_spend(m.model_name, s.frequency, s.monetary_value) AS expected_spend,
	   loyalty.clv_value(m.model_name, s.frequency, s.recency, s.age, s.monetary_value) AS clv_12m
FROM (SELECT c.model_name, c.time_unit FROM loyalty.clv_model c
	  WHERE c.purchase_unit = 'day'
	  ORDER BY c.fitted_at DESC, c.model_name LIMIT 1) m
CROSS JOIN LATERAL loyalty.clv_summary_live(pg_catalog.now(), m.time_unit) s
LEFT JOIN loyalty.customer_segment g ON g.customer_id = s.customer_id;

COMMENT ON VIEW loyalty.clv_customers IS
	'Every tracked customer scored by the most recently fitted day-based CLV model, now, beside the RFM segment';
COMMENT ON COLUMN loyalty.clv_customers.customer_id IS 'Customer key as tracked';
COMMENT ON COLUMN loyalty.clv_customers.segment IS 'RFM segment at the last refresh (NULL: not scored yet)';
COMMENT ON COLUMN loyalty.clv_customers.score IS 'RFM score at the last refresh, as text';
COMMENT ON COLUMN loyalty.clv_customers.model_name IS 'The model scoring the row (latest fitted_at among day-based models)';
COMMENT ON COLUMN loyalty.clv_customers.frequency IS 'Repeat purchase days (x)';
COMMENT ON COLUMN loyalty.clv_customers.recency IS 'Last purchase since the first (t_x), in the model''s time unit';
COMMENT ON COLUMN loyalty.clv_customers.age IS 'Now since the first purchase (T), in the model''s time unit';
COMMENT ON COLUMN loyalty.clv_customers.monetary_value IS 'Mean spend of the repeat purchase days (NULL: none)';
COMMENT ON COLUMN loyalty.clv_customers.spend_total IS 'All-time spend (orders and refunds)';
COMMENT ON COLUMN loyalty.clv_customers.p_alive IS 'BG/NBD probability of being still active';
COMMENT ON COLUMN loyalty.clv_customers.expected_purchases_12m IS 'Expected purchase days in the next 12 months (of 30 days / 4.345 weeks)';
COMMENT ON COLUMN loyalty.clv_customers.expected_spend IS 'Gamma-Gamma expected spend per purchase';
COMMENT ON COLUMN loyalty.clv_customers.clv_12m IS 'Value of the next 12 months, discounted 1% a month';
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.clv_customers'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

-- Issue 17, referrals: the referral family (src/referral/referral.sql, new in 0.3.0)
/* ---------------------------------------------------------------------------
 * referral.sql: referral programs (doc/referrals.md)
 *
 * A referrer gets a personal code of a program (loyalty.coupon_code, random
 * with check characters, or a vanity word), created on demand and
 * idempotently.  A friend (the referee) joins with a code: one referrer per
 * referee, ever.  The referee's first qualifying purchase, reported by
 * referral_order (from the app's checkout or from a trigger of its own on
 * the orders table), rewards both sides with points through the points
 * ledger, pending until the return window closes; referral_refund takes
 * both rewards back when that order is refunded.
 *
 * Abuse rules, each refused with a reason (SQLSTATE LR0nn, DETAIL a JSON
 * object with "reason" first): self-referral by customer key and by the
 * normalised identifiers the app passes, an identifier already used by
 * another customer, caps per referrer (per period and lifetime), a minimum
 * order amount, new customers only, a referrer in good standing.
 *
 * Citus (doc/referrals.md#citus): every per-customer table is keyed by
 * (customer_id COLLATE "C", ...): referral_code by the referrer,
 * referral by the referee (so "one referrer per referee" is the primary
 * key of a single-shard row), referral_period by the referrer.  The two
 * global uniqueness facts cannot be keyed by a customer: a code belongs to
 * one referrer (referral_code_key, keyed and distributed by the code) and
 * an identifier to one customer (referral_claim, keyed and distributed by
 * (kind, digest)); each is a one-row, single-shard insert routed by its key
 * inside the call's distributed transaction, exactly as points_reference.
 * Caps are counters on the referrer's own rows (referral_code.converted,
 * referral_period), never a count across shards.  The configuration tables
 * have no triggers and can be reference tables.
 *
 * Locks, always in this order: the referee's referral row, then the
 * referrer's referral_code row, then identifier claims sorted by (kind,
 * digest), then the points accounts (points_earn / points_reverse).
 * ------------------------------------------------------------------------ */

/* tables */

CREATE TABLE loyalty.referral_program (
	program				text COLLATE "C" PRIMARY KEY
		CONSTRAINT referral_program_program_check CHECK (pg_catalog.octet_length(program) BETWEEN 1 AND 64),
	active				boolean NOT NULL DEFAULT true,
	code_pattern		text NOT NULL DEFAULT 'REF-####-####',
	referrer_points		bigint NOT NULL DEFAULT 0 CHECK (referrer_points >= 0),
	referee_points		bigint NOT NULL DEFAULT 0 CHECK (referee_points >= 0),
	return_window_days	integer NOT NULL DEFAULT 30 CHECK (return_window_days BETWEEN 0 AND 3660),
	min_order_amount	numeric NOT NULL DEFAULT 0 CHECK (min_order_amount >= 0),
	new_customers_only	boolean NOT NULL DEFAULT true,
	referrer_min_orders	integer NOT NULL DEFAULT 0 CHECK (referrer_min_orders >= 0),
	referrer_no_debt	boolean NOT NULL DEFAULT true,
	cap_lifetime		integer CHECK (cap_lifetime > 0),
	cap_per_period		integer CHECK (cap_per_period > 0),
	cap_period			text NOT NULL DEFAULT 'month'
		CONSTRAINT referral_program_cap_period_check CHECK (cap_period IN ('day', 'week', 'month', 'quarter', 'year')),
	point_value			numeric CHECK (point_value >= 0),
	created_at			timestamptz NOT NULL DEFAULT pg_catalog.now()
);

COMMENT ON TABLE loyalty.referral_program IS
	'Referral programs (configuration): code pattern, rewards, return window, abuse rules; no trigger, can be a Citus reference table';
COMMENT ON COLUMN loyalty.referral_program.program IS 'Program name (1 to 64 bytes), passed to referral_code';
COMMENT ON COLUMN loyalty.referral_program.active IS 'False: no new code, join or conversion (existing rewards stay)';
COMMENT ON COLUMN loyalty.referral_program.code_pattern IS 'Pattern of generated codes (loyalty.random_codes: # = random character, check characters appended)';
COMMENT ON COLUMN loyalty.referral_program.referrer_points IS 'Points for the referrer per successful referral, unless a row of loyalty.referral_reward_tier gives more for its rank';
COMMENT ON COLUMN loyalty.referral_program.referee_points IS 'Points for the referee on the first qualifying purchase';
COMMENT ON COLUMN loyalty.referral_program.return_window_days IS 'Rewards stay pending this many days after the qualifying order (the return window)';
COMMENT ON COLUMN loyalty.referral_program.min_order_amount IS 'A purchase below this amount does not qualify (a later one may)';
COMMENT ON COLUMN loyalty.referral_program.new_customers_only IS 'Refuse a referee who already has orders (tracked statistics or purchase earnings)';
COMMENT ON COLUMN loyalty.referral_program.referrer_min_orders IS 'Good standing: the referrer has at least this many orders (0: no condition)';
COMMENT ON COLUMN loyalty.referral_program.referrer_no_debt IS 'Good standing: the referrer owes no points (points_account.debt = 0)';
COMMENT ON COLUMN loyalty.referral_program.cap_lifetime IS 'At most this many rewarded referrals per referrer, ever (NULL: no cap; revoked ones do not count)';
COMMENT ON COLUMN loyalty.referral_program.cap_per_period IS 'At most this many rewarded referrals per referrer per cap_period (NULL: no cap)';
COMMENT ON COLUMN loyalty.referral_program.cap_period IS 'Calendar period of cap_per_period in the program time zone: day, week, month, quarter or year';
COMMENT ON COLUMN loyalty.referral_program.point_value IS 'Money value of one point, for the cost and ROI of loyalty.referral_kpi (NULL: unknown)';
COMMENT ON COLUMN loyalty.referral_program.created_at IS 'When the program was created';

SELECT pg_catalog.pg_extension_config_dump('loyalty.referral_program'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.referral_program'::pg_catalog.regclass, 'SELECT, INSERT, UPDATE, DELETE'::pg_catalog.text);
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.referral_program'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.referral_reward_tier (
	program			text COLLATE "C" NOT NULL,
	from_count		integer NOT NULL CHECK (from_count >= 1),
	referrer_points	bigint NOT NULL CHECK (referrer_points >= 0),
	PRIMARY KEY (program, from_count)
);

COMMENT ON TABLE loyalty.referral_reward_tier IS
	'Rising referrer rewards: the n-th successful referral of a referrer earns the points of the tier with the greatest from_count <= n (configuration)';
COMMENT ON COLUMN loyalty.referral_reward_tier.program IS 'The program (loyalty.referral_program.program)';
COMMENT ON COLUMN loyalty.referral_reward_tier.from_count IS 'From the n-th successful referral on (1 = the first friend)';
COMMENT ON COLUMN loyalty.referral_reward_tier.referrer_points IS 'Points for the referrer for each referral from that rank on';

SELECT pg_catalog.pg_extension_config_dump('loyalty.referral_reward_tier'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.referral_reward_tier'::pg_catalog.regclass, 'SELECT, INSERT, UPDATE, DELETE'::pg_catalog.text);
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.referral_reward_tier'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.referral_code (
	customer_id		text COLLATE "C" NOT NULL,
	program			text COLLATE "C" NOT NULL,
	code			loyalty.coupon_code NOT NULL,
	kind			text NOT NULL,
	converted		integer NOT NULL DEFAULT 0,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	PRIMARY KEY (customer_id, program)
);

COMMENT ON TABLE loyalty.referral_code IS
	'Personal referral code of each referrer and program, with the referrer''s count of rewarded referrals (the lifetime cap and the reward rank)';
COMMENT ON COLUMN loyalty.referral_code.customer_id IS 'The referrer';
COMMENT ON COLUMN loyalty.referral_code.program IS 'The program';
COMMENT ON COLUMN loyalty.referral_code.code IS 'The code (unique across programs: loyalty.referral_code_key)';
COMMENT ON COLUMN loyalty.referral_code.kind IS 'generated (random, check characters) or vanity';
COMMENT ON COLUMN loyalty.referral_code.converted IS 'Rewarded referrals not revoked';
COMMENT ON COLUMN loyalty.referral_code.created_at IS 'When the code was created';

SELECT pg_catalog.pg_extension_config_dump('loyalty.referral_code'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.referral_code'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.referral_code'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/*
 * A code belongs to one referrer: keyed (and on Citus distributed) by the
 * code, the documented exception to per-customer keys, as points_reference.
 */
CREATE TABLE loyalty.referral_code_key (
	code			loyalty.coupon_code PRIMARY KEY,
	customer_id		text COLLATE "C" NOT NULL,
	program			text COLLATE "C" NOT NULL
);

COMMENT ON TABLE loyalty.referral_code_key IS
	'Owner of every referral code (one referrer per code, by primary key; Citus: distributed by code)';
COMMENT ON COLUMN loyalty.referral_code_key.code IS 'The code (compared normalised: case, separators, O/0, I/L/1)';
COMMENT ON COLUMN loyalty.referral_code_key.customer_id IS 'The referrer';
COMMENT ON COLUMN loyalty.referral_code_key.program IS 'The program of the code';

SELECT pg_catalog.pg_extension_config_dump('loyalty.referral_code_key'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.referral_code_key'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.referral (
	customer_id		text COLLATE "C" NOT NULL PRIMARY KEY,
	reference		text NOT NULL,
	program			text COLLATE "C" NOT NULL,
	referrer_id		text COLLATE "C" NOT NULL,
	code			loyalty.coupon_code NOT NULL,
	joined_at		timestamptz NOT NULL,
	status			text NOT NULL DEFAULT 'joined'
		CONSTRAINT referral_status_check CHECK (status IN ('joined', 'converted', 'refused', 'revoked')),
	reason			text,
	order_ref		text,
	order_amount	numeric,
	converted_at	timestamptz,
	pending_until	timestamptz,
	rank			integer,
	referrer_points	bigint,
	referee_points	bigint,
	revoked_at		timestamptz
);

COMMENT ON TABLE loyalty.referral IS
	'One row per referee, ever (primary key): who referred them, and the fate of their first qualifying purchase';
COMMENT ON COLUMN loyalty.referral.customer_id IS 'The referee (the friend who joined)';
COMMENT ON COLUMN loyalty.referral.reference IS 'The caller reference of the join (a repeat returns the join)';
COMMENT ON COLUMN loyalty.referral.program IS 'The program of the code';
COMMENT ON COLUMN loyalty.referral.referrer_id IS 'The referrer';
COMMENT ON COLUMN loyalty.referral.code IS 'The code the referee joined with';
COMMENT ON COLUMN loyalty.referral.joined_at IS 'Business time of the join';
COMMENT ON COLUMN loyalty.referral.status IS 'joined (no qualifying purchase yet), converted (rewarded; pending until pending_until), refused (the purchase was refused, see reason), revoked (the qualifying order was refunded)';
COMMENT ON COLUMN loyalty.referral.reason IS 'Why the conversion was refused (referrer_cap_lifetime, referrer_cap_period, referrer_not_in_good_standing)';
COMMENT ON COLUMN loyalty.referral.order_ref IS 'The qualifying (or refused) order';
COMMENT ON COLUMN loyalty.referral.order_amount IS 'Its amount';
COMMENT ON COLUMN loyalty.referral.converted_at IS 'Business time of that order';
COMMENT ON COLUMN loyalty.referral.pending_until IS 'End of the return window: the rewards are pending until then';
COMMENT ON COLUMN loyalty.referral.rank IS 'This referral is the rank-th rewarded one of the referrer (reward tier)';
COMMENT ON COLUMN loyalty.referral.referrer_points IS 'Points credited to the referrer (reference referral:<referee>:referrer)';
COMMENT ON COLUMN loyalty.referral.referee_points IS 'Points credited to the referee (reference referral:<referee>:referee)';
COMMENT ON COLUMN loyalty.referral.revoked_at IS 'Business time of the refund that revoked the rewards';

CREATE INDEX referral_referrer_idx ON loyalty.referral (referrer_id, program);

SELECT pg_catalog.pg_extension_config_dump('loyalty.referral'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.referral'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.referral'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.referral_period (
	customer_id		text COLLATE "C" NOT NULL,
	program			text COLLATE "C" NOT NULL,
	period_start	date NOT NULL,
	converted		integer NOT NULL DEFAULT 0,
	PRIMARY KEY (customer_id, program, period_start)
);

COMMENT ON TABLE loyalty.referral_period IS
	'Rewarded referrals (not revoked) per referrer, program and cap period: the per-period cap';
COMMENT ON COLUMN loyalty.referral_period.customer_id IS 'The referrer';
COMMENT ON COLUMN loyalty.referral_period.program IS 'The program';
COMMENT ON COLUMN loyalty.referral_period.period_start IS 'First day of the cap period (program time zone)';
COMMENT ON COLUMN loyalty.referral_period.converted IS 'Rewarded referrals of the period not revoked';

SELECT pg_catalog.pg_extension_config_dump('loyalty.referral_period'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.referral_period'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/*
 * An identifier (normalised email, phone digits, device or payment
 * fingerprint) belongs to the first customer who gave it to a referral
 * call: keyed (and on Citus distributed) by (kind, digest).  Only digests
 * are kept (SHA-256 of the normalised value), never the value.
 */
CREATE TABLE loyalty.referral_claim (
	kind			text NOT NULL
		CONSTRAINT referral_claim_kind_check CHECK (kind IN ('email', 'phone', 'device', 'payment')),
	digest			bytea NOT NULL,
	customer_id		text COLLATE "C" NOT NULL,
	claimed_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	PRIMARY KEY (kind, digest)
);

COMMENT ON TABLE loyalty.referral_claim IS
	'Owner of every identifier given to a referral call (one customer per identifier, by primary key; Citus: distributed by digest); SHA-256 digests only';
COMMENT ON COLUMN loyalty.referral_claim.kind IS 'email, phone, device or payment';
COMMENT ON COLUMN loyalty.referral_claim.digest IS 'SHA-256 of the normalised identifier (loyalty.referral_normalize)';
COMMENT ON COLUMN loyalty.referral_claim.customer_id IS 'The customer who gave it first';
COMMENT ON COLUMN loyalty.referral_claim.claimed_at IS 'When';

CREATE INDEX referral_claim_customer_idx ON loyalty.referral_claim (customer_id);

SELECT pg_catalog.pg_extension_config_dump('loyalty.referral_claim'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.referral_claim'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/* functions */

/*
 * The normal form of an identifier, the one place its rules are written
 * (doc/referrals.md#identifiers).  email: trimmed, lower case, split at the
 * last @; the local part loses everything from the first + (plus tags);
 * for gmail.com and googlemail.com the dots of the local part are dropped
 * and googlemail.com becomes gmail.com.  phone: the digits only, a leading
 * 00 dropped (international prefix).  device, payment: trimmed, lower case
 * (the app passes a fingerprint hash).  NULL when nothing usable is left.
 */
CREATE FUNCTION loyalty.referral_normalize(kind text, value text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v text := pg_catalog.lower(pg_catalog.btrim(value));
	at_pos integer;
	local text;
	domain text;
BEGIN
	IF kind = 'email' THEN
		at_pos := pg_catalog.length(v) - pg_catalog.strpos(pg_catalog.reverse(v), '@') + 1;
		IF pg_catalog.strpos(v, '@') = 0 THEN
			RETURN NULL;
		END IF;
		local := pg_catalog.substr(v, 1, at_pos - 1);
		domain := pg_catalog.substr(v, at_pos + 1);
		IF pg_catalog.strpos(local, '+') > 0 THEN
			local := pg_catalog.substr(local, 1, pg_catalog.strpos(local, '+') - 1);
		END IF;
		IF domain = 'googlemail.com' THEN
			domain := 'gmail.com';
		END IF;
		IF domain = 'gmail.com' THEN
			local := pg_catalog.replace(local, '.', '');
		END IF;
		IF local = '' OR domain = '' THEN
			RETURN NULL;
		END IF;
		RETURN local || '@' || domain;
	ELSIF kind = 'phone' THEN
		v := pg_catalog.regexp_replace(v, '[^0-9]', '', 'g');
		IF pg_catalog.left(v, 2) = '00' THEN
			v := pg_catalog.substr(v, 3);
		END IF;
		RETURN NULLIF(v, '');
	ELSIF kind IN ('device', 'payment') THEN
		RETURN NULLIF(v, '');
	END IF;
	RAISE EXCEPTION 'unknown identifier kind "%"', kind
		USING ERRCODE = 'invalid_parameter_value',
			  DETAIL = 'The kinds are email, phone, device and payment.';
END;
$$;

COMMENT ON FUNCTION loyalty.referral_normalize(text, text) IS
	'Normal form of a referral identifier: email (lower case, plus tags dropped, gmail dots dropped), phone (digits, leading 00 dropped), device / payment (trimmed, lower case); NULL when nothing is left';
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.referral_normalize(text, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * The identifiers of a call as (kind, digest) pairs, sorted (the lock
 * order of claims); refuses a given identifier that normalises to nothing.
 */
CREATE FUNCTION loyalty._referral_identifiers(email text, phone text, device_hash text, payment_hash text)
RETURNS TABLE (kind text, digest bytea)
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	k text;
	raw text;
	norm text;
BEGIN
	FOR k, raw IN SELECT * FROM (VALUES ('device'::text, device_hash), ('email'::text, email),
									   ('payment'::text, payment_hash), ('phone'::text, phone)) AS v(k, raw)
	LOOP
		CONTINUE WHEN raw IS NULL;
		norm := loyalty.referral_normalize(k, raw);
		IF norm IS NULL THEN
			RAISE EXCEPTION 'invalid % identifier', k
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = pg_catalog.format('The %s given normalises to nothing (doc/referrals.md, identifiers).', k);
		END IF;
		kind := k;
		digest := pg_catalog.sha256(pg_catalog.convert_to(norm, 'UTF8'));
		RETURN NEXT;
	END LOOP;
END;
$$;

COMMENT ON FUNCTION loyalty._referral_identifiers(text, text, text, text) IS
	'Internal: the (kind, SHA-256 digest) pairs of the identifiers given, sorted by kind';

/*
 * Claim identifiers for a customer, in (kind, digest) order; returns the
 * first one already owned by another customer (NULL kind when none).  A
 * concurrent claim of the same identifier waits on the primary key and
 * then reads the owner (ON CONFLICT DO UPDATE returns the row it locked).
 */
CREATE FUNCTION loyalty._referral_claim(customer_id text, email text, phone text, device_hash text,
										payment_hash text, OUT kind text, OUT owner text)
RETURNS record
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	id record;
	who text;
BEGIN
	FOR id IN SELECT * FROM loyalty._referral_identifiers(email, phone, device_hash, payment_hash) i
			  ORDER BY i.kind, i.digest
	LOOP
		INSERT INTO loyalty.referral_claim AS c (kind, digest, customer_id)
		VALUES (id.kind, id.digest, _referral_claim.customer_id)
		ON CONFLICT ON CONSTRAINT referral_claim_pkey DO UPDATE SET customer_id = c.customer_id
		RETURNING c.customer_id INTO who;
		IF who OPERATOR(pg_catalog.<>) _referral_claim.customer_id AND owner IS NULL THEN
			kind := id.kind;
			owner := who;
		END IF;
	END LOOP;
END;
$$;

COMMENT ON FUNCTION loyalty._referral_claim(text, text, text, text, text) IS
	'Internal: claim identifiers for a customer; the first kind owned by another customer, and that owner';

/* The program time zone (no settings row: UTC). */
CREATE FUNCTION loyalty._referral_zone()
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT COALESCE((SELECT s.timezone FROM loyalty.settings s), 'UTC'::text)
$$;

COMMENT ON FUNCTION loyalty._referral_zone() IS 'Internal: the program time zone';

/*
 * Orders a customer has made: the tracked statistics (folded and pending)
 * or the purchase earnings of the ledger, whichever counts more.
 */
CREATE FUNCTION loyalty._referral_orders(customer_id text)
RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT GREATEST(
		COALESCE((SELECT s.order_count FROM loyalty.customer_stats s
				  WHERE s.customer_id OPERATOR(pg_catalog.=) $1), 0::bigint)
		OPERATOR(pg_catalog.+)
		COALESCE((SELECT pg_catalog.sum(d.order_count)::bigint FROM loyalty.customer_stats_delta d
				  WHERE d.customer_id OPERATOR(pg_catalog.=) $1), 0::bigint),
		(SELECT pg_catalog.count(*) FROM loyalty.points_ledger e
		 WHERE e.customer_id OPERATOR(pg_catalog.=) $1 AND e.kind OPERATOR(pg_catalog.=) 'earn'
		   AND e.amount IS NOT NULL))
$$;

COMMENT ON FUNCTION loyalty._referral_orders(text) IS
	'Internal: orders of a customer (tracked statistics with pending changes, or purchase earnings of the ledger, whichever is greater)';

/*
 * Good standing of a referrer by the program's rules: NULL when in good
 * standing, else the rule failed (min_orders, debt).
 */
CREATE FUNCTION loyalty._referral_standing(referrer text, prog loyalty.referral_program)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF prog.referrer_no_debt AND EXISTS (SELECT 1 FROM loyalty.points_account a
										 WHERE a.customer_id OPERATOR(pg_catalog.=) referrer
										   AND a.debt OPERATOR(pg_catalog.>) 0) THEN
		RETURN 'debt';
	END IF;
	IF prog.referrer_min_orders OPERATOR(pg_catalog.>) 0
	   AND loyalty._referral_orders(referrer) OPERATOR(pg_catalog.<) prog.referrer_min_orders THEN
		RETURN 'min_orders';
	END IF;
	RETURN NULL;
END;
$$;

COMMENT ON FUNCTION loyalty._referral_standing(text, loyalty.referral_program) IS
	'Internal: NULL when the referrer is in good standing by the program''s rules, else the rule failed (debt, min_orders)';

/*
 * The points references of a referral's two rewards:
 * referral:<referee>:referee and referral:<referee>:referrer, or with the
 * referee's id as SHA-256 hex when that would pass the 256-byte limit.
 */
CREATE FUNCTION loyalty._referral_reference(referee text, side text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT 'referral:' OPERATOR(pg_catalog.||)
		   CASE WHEN pg_catalog.octet_length($1) OPERATOR(pg_catalog.<=) 230 THEN $1
				ELSE pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to($1, 'UTF8')), 'hex') END
		   OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) $2
$$;

COMMENT ON FUNCTION loyalty._referral_reference(text, text) IS
	'Internal: points reference of a referral reward (referral:<referee>:referee or :referrer)';

/* The program row, or LR002 program_inactive (state missing / inactive). */
CREATE FUNCTION loyalty._referral_program(program text)
RETURNS loyalty.referral_program
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	prog loyalty.referral_program;
BEGIN
	SELECT p.* INTO prog FROM loyalty.referral_program p WHERE p.program = _referral_program.program;
	IF NOT FOUND OR NOT prog.active THEN
		RAISE EXCEPTION 'referral program "%" is not active', program
			USING ERRCODE = 'LR002',
				  DETAIL = pg_catalog.json_build_object('reason', 'program_inactive', 'program', program,
								  'state', CASE WHEN prog.program IS NULL THEN 'missing' ELSE 'inactive' END)::text;
	END IF;
	RETURN prog;
END;
$$;

COMMENT ON FUNCTION loyalty._referral_program(text) IS
	'Internal: the active program of that name, or LR002 program_inactive';

/*
 * The referrer's personal code of a program, created on the first call
 * (random from the program's code_pattern, or the vanity word given) and
 * returned by every later one.  The identifiers given are claimed for the
 * referrer (so a referee giving one of them is a self-referral); one owned
 * by another customer is left to its owner.
 */
CREATE FUNCTION loyalty.referral_code(customer_id text, program text,
									  vanity text DEFAULT NULL,
									  email text DEFAULT NULL, phone text DEFAULT NULL,
									  device_hash text DEFAULT NULL, payment_hash text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	p_customer text := customer_id;
	prog loyalty.referral_program;
	existing loyalty.referral_code;
	wanted loyalty.coupon_code;
	candidate loyalty.coupon_code;
	tries integer := 0;
	done boolean := false;
BEGIN
	IF p_customer IS NULL OR program IS NULL THEN
		RAISE EXCEPTION 'customer_id and program must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, p_customer);
	prog := loyalty._referral_program(program);
	IF vanity IS NOT NULL THEN
		wanted := loyalty.vanity_code(vanity);
	END IF;
	PERFORM loyalty._referral_claim(p_customer, email, phone, device_hash, payment_hash);

	SELECT c.* INTO existing FROM loyalty.referral_code c
	WHERE c.customer_id = p_customer AND c.program = prog.program;
	IF FOUND THEN
		IF wanted IS NOT NULL AND NOT existing.code OPERATOR(loyalty.=) wanted THEN
			RAISE EXCEPTION 'customer "%" already has referral code % in program "%"', p_customer, existing.code::text, prog.program
				USING ERRCODE = 'LR009',
					  DETAIL = pg_catalog.json_build_object('reason', 'code_exists', 'program', prog.program,
									  'code', existing.code::text)::text;
		END IF;
		RETURN existing.code::text;
	END IF;

	WHILE NOT done LOOP
		tries := tries + 1;
		IF wanted IS NOT NULL THEN
			candidate := wanted;
		ELSE
			SELECT r INTO candidate FROM loyalty.random_codes(prog.code_pattern, 1) r;
		END IF;
		INSERT INTO loyalty.referral_code_key AS k (code, customer_id, program)
		VALUES (candidate, p_customer, prog.program)
		ON CONFLICT ON CONSTRAINT referral_code_key_pkey DO NOTHING;
		done := FOUND;
		IF NOT done AND (wanted IS NOT NULL OR tries >= 10) THEN
			RAISE EXCEPTION 'referral code % is taken', candidate::text
				USING ERRCODE = 'LR009',
					  DETAIL = pg_catalog.json_build_object('reason', 'code_taken', 'program', prog.program,
									  'code', candidate::text)::text,
					  HINT = 'Choose another vanity word, or a pattern with more random characters.';
		END IF;
	END LOOP;

	-- a concurrent first call of this referrer may have won: keep its code
	INSERT INTO loyalty.referral_code AS c (customer_id, program, code, kind)
	VALUES (p_customer, prog.program, candidate, CASE WHEN wanted IS NULL THEN 'generated' ELSE 'vanity' END)
	ON CONFLICT ON CONSTRAINT referral_code_pkey DO NOTHING;
	IF NOT FOUND THEN
		DELETE FROM loyalty.referral_code_key k WHERE k.code OPERATOR(loyalty.=) candidate;
		SELECT c.* INTO STRICT existing FROM loyalty.referral_code c
		WHERE c.customer_id = p_customer AND c.program = prog.program;
		RETURN existing.code::text;
	END IF;
	RETURN candidate::text;
END;
$$;

COMMENT ON FUNCTION loyalty.referral_code(text, text, text, text, text, text, text) IS
	'The referrer''s personal code of a program, created on the first call (random with check characters, or vanity => word) and returned by every later one; identifiers given are claimed for the referrer; LR002 program inactive, LR009 code taken or another code exists';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.referral_code(text, text, text, text, text, text, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * A friend joins with a code.  One referrer per referee, ever: the
 * referral row's primary key is the referee, so of two joins racing for one
 * referee the second waits and then repeats the first (same reference and
 * code) or is refused (LR004 already_referred).  The checks, in this order:
 * the code (LR001), the program (LR002), self-referral by customer key
 * (LR003), already referred (LR004, before every other check so that a
 * repeat returns the join even when the rules changed since), new customers
 * only (LR005), the referrer's good standing (LR006), the referrer's caps
 * (LR007), then the identifiers: one claimed by the referrer is a
 * self-referral (LR003), one claimed by any other customer is reused (LR008).
 * A refusal leaves nothing behind (no claim, no row).
 */
CREATE FUNCTION loyalty.referral_join(customer_id text, reference text, code text,
									  at timestamptz DEFAULT pg_catalog.now(),
									  email text DEFAULT NULL, phone text DEFAULT NULL,
									  device_hash text DEFAULT NULL, payment_hash text DEFAULT NULL,
									  OUT program text, OUT referrer_id text, OUT status text, OUT joined_at timestamptz)
RETURNS record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	p_customer text := customer_id;
	p_reference text := reference;
	p_code loyalty.coupon_code;
	bad text;
	owner loyalty.referral_code_key;
	prog loyalty.referral_program;
	ref loyalty.referral;
	rc loyalty.referral_code;
	standing text;
	in_period integer;
	claim record;
BEGIN
	IF p_customer IS NULL OR p_reference IS NULL OR code IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, reference, code and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, p_customer);
	PERFORM loyalty._points_check_key('reference'::text, p_reference);
	IF at > pg_catalog.now() + '5 minutes'::interval THEN
		RAISE EXCEPTION 'at must not lie in the future'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'A business time may be at most 5 minutes ahead of the server clock.';
	END IF;

	bad := loyalty.coupon_code_check(code);
	IF bad IS NULL THEN
		p_code := code::loyalty.coupon_code;
		SELECT k.* INTO owner FROM loyalty.referral_code_key k WHERE k.code OPERATOR(loyalty.=) p_code;
	END IF;
	IF bad IS NOT NULL OR owner.code IS NULL THEN
		RAISE EXCEPTION 'unknown referral code "%"', code
			USING ERRCODE = 'LR001',
				  DETAIL = pg_catalog.json_build_object('reason', 'unknown_code', 'code', code,
								  'check', COALESCE(bad, 'not_found'))::text,
				  HINT = 'Check the code for typos.';
	END IF;

	-- a repeat returns the first join, whatever changed since
	SELECT r.* INTO ref FROM loyalty.referral r WHERE r.customer_id = p_customer;
	IF FOUND THEN
		IF ref.reference = p_reference AND ref.code OPERATOR(loyalty.=) p_code THEN
			program := ref.program; referrer_id := ref.referrer_id; status := ref.status; joined_at := ref.joined_at;
			RETURN;
		END IF;
		RAISE EXCEPTION 'customer "%" was already referred', p_customer
			USING ERRCODE = 'LR004',
				  DETAIL = pg_catalog.json_build_object('reason', 'already_referred', 'program', ref.program,
								  'same_referrer', ref.referrer_id = owner.customer_id)::text,
				  HINT = 'A customer can join a referral program once.';
	END IF;

	prog := loyalty._referral_program(owner.program);
	IF owner.customer_id = p_customer THEN
		RAISE EXCEPTION 'customer "%" cannot use their own referral code', p_customer
			USING ERRCODE = 'LR003',
				  DETAIL = pg_catalog.json_build_object('reason', 'self_referral', 'by', 'customer_id')::text;
	END IF;
	IF prog.new_customers_only AND loyalty._referral_orders(p_customer) > 0 THEN
		RAISE EXCEPTION 'customer "%" is not a new customer', p_customer
			USING ERRCODE = 'LR005',
				  DETAIL = pg_catalog.json_build_object('reason', 'not_new_customer', 'program', prog.program)::text,
				  HINT = 'Only customers without orders can join with a referral code.';
	END IF;
	standing := loyalty._referral_standing(owner.customer_id, prog);
	IF standing IS NOT NULL THEN
		RAISE EXCEPTION 'the referrer of code "%" is not in good standing', code
			USING ERRCODE = 'LR006',
				  DETAIL = pg_catalog.json_build_object('reason', 'referrer_not_in_good_standing', 'program', prog.program,
								  'rule', standing)::text;
	END IF;
	SELECT c.* INTO STRICT rc FROM loyalty.referral_code c
	WHERE c.customer_id = owner.customer_id AND c.program = prog.program;
	IF prog.cap_lifetime IS NOT NULL AND rc.converted >= prog.cap_lifetime THEN
		RAISE EXCEPTION 'the referrer of code "%" reached the referral cap', code
			USING ERRCODE = 'LR007',
				  DETAIL = pg_catalog.json_build_object('reason', 'referrer_cap_reached', 'program', prog.program,
								  'cap', 'lifetime', 'limit', prog.cap_lifetime, 'converted', rc.converted)::text;
	END IF;
	IF prog.cap_per_period IS NOT NULL THEN
		SELECT p.converted INTO in_period FROM loyalty.referral_period p
		WHERE p.customer_id = owner.customer_id AND p.program = prog.program
		  AND p.period_start = pg_catalog.date_trunc(prog.cap_period, pg_catalog.timezone(loyalty._referral_zone(), at))::date;
		IF COALESCE(in_period, 0) >= prog.cap_per_period THEN
			RAISE EXCEPTION 'the referrer of code "%" reached the referral cap', code
				USING ERRCODE = 'LR007',
					  DETAIL = pg_catalog.json_build_object('reason', 'referrer_cap_reached', 'program', prog.program,
									  'cap', 'period', 'limit', prog.cap_per_period, 'converted', in_period)::text;
		END IF;
	END IF;

	INSERT INTO loyalty.referral AS r (customer_id, reference, program, referrer_id, code, joined_at)
	VALUES (p_customer, p_reference, prog.program, owner.customer_id, owner.code, at)
	ON CONFLICT ON CONSTRAINT referral_pkey DO NOTHING;
	IF NOT FOUND THEN
		-- a concurrent join of this referee committed first
		SELECT r.* INTO ref FROM loyalty.referral r WHERE r.customer_id = p_customer;
		IF NOT FOUND THEN
			RAISE EXCEPTION 'could not serialize access due to a concurrent join'
				USING ERRCODE = 'serialization_failure',
					  DETAIL = 'Another transaction joined this customer after this transaction''s snapshot.';
		END IF;
		IF ref.reference = p_reference AND ref.code OPERATOR(loyalty.=) p_code THEN
			program := ref.program; referrer_id := ref.referrer_id; status := ref.status; joined_at := ref.joined_at;
			RETURN;
		END IF;
		RAISE EXCEPTION 'customer "%" was already referred', p_customer
			USING ERRCODE = 'LR004',
				  DETAIL = pg_catalog.json_build_object('reason', 'already_referred', 'program', ref.program,
								  'same_referrer', ref.referrer_id = owner.customer_id)::text,
				  HINT = 'A customer can join a referral program once.';
	END IF;

	claim := loyalty._referral_claim(p_customer, email, phone, device_hash, payment_hash);
	IF claim.owner = owner.customer_id THEN
		RAISE EXCEPTION 'customer "%" cannot use their own referral code', p_customer
			USING ERRCODE = 'LR003',
				  DETAIL = pg_catalog.json_build_object('reason', 'self_referral', 'by', claim.kind)::text;
	ELSIF claim.owner IS NOT NULL THEN
		RAISE EXCEPTION 'the % given is already used by another customer', claim.kind
			USING ERRCODE = 'LR008',
				  DETAIL = pg_catalog.json_build_object('reason', 'identifier_reused', 'kind', claim.kind)::text;
	END IF;

	program := prog.program; referrer_id := owner.customer_id; status := 'joined'; joined_at := at;
END;
$$;

COMMENT ON FUNCTION loyalty.referral_join(text, text, text, timestamptz, text, text, text, text) IS
	'A friend joins with a referral code (one referrer per referee, ever; a repeat with the same reference and code returns the join); LR001 unknown code, LR002 program inactive, LR003 self-referral, LR004 already referred, LR005 not a new customer, LR006 referrer not in good standing, LR007 referrer cap reached, LR008 identifier reused';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.referral_join(text, text, text, timestamptz, text, text, text, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * The referee's purchase: the first one of at least min_order_amount
 * converts the referral and rewards both sides, pending until the return
 * window closes (at + return_window_days).  Never raises for a purchase
 * that does not qualify (it is called from checkouts and order triggers):
 * the status says what happened.  not_referred: the customer joined no
 * program; below_minimum: the amount is too small (a later order may
 * qualify); program_inactive: no conversion while the program is off;
 * converted: rewarded (this order; a repeat returns the first result);
 * refused: the referrer's cap or standing refused the rewards (reason), for
 * good; revoked: the qualifying order was refunded; already_converted:
 * another order converted the referral.
 * The referrer's code row is locked (FOR UPDATE) while the cap is checked
 * and counted, so two conversions of one referrer serialise and a cap is
 * never exceeded; points are credited in customer_id order (no deadlock
 * between mutual referrals).
 */
CREATE FUNCTION loyalty.referral_order(customer_id text, order_ref text, amount numeric,
									   at timestamptz DEFAULT pg_catalog.now(),
									   OUT status text, OUT reason text, OUT referrer_id text,
									   OUT referrer_points bigint, OUT referee_points bigint,
									   OUT pending_until timestamptz)
RETURNS record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	p_customer text := customer_id;
	ref loyalty.referral;
	prog loyalty.referral_program;
	rc loyalty.referral_code;
	period date;
	in_period integer;
	refusal text;
	n_rank integer;
	side record;
BEGIN
	IF p_customer IS NULL OR order_ref IS NULL OR amount IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, order_ref, amount and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, p_customer);
	PERFORM loyalty._points_check_key('order_ref'::text, order_ref);

	SELECT r.* INTO ref FROM loyalty.referral r WHERE r.customer_id = p_customer FOR UPDATE;
	IF NOT FOUND THEN
		status := 'not_referred';
		RETURN;
	END IF;
	referrer_id := ref.referrer_id;
	IF ref.status <> 'joined' THEN
		status := CASE WHEN ref.order_ref = order_ref OR ref.status <> 'converted' THEN ref.status
					   ELSE 'already_converted' END;
		reason := ref.reason;
		referrer_points := ref.referrer_points; referee_points := ref.referee_points;
		pending_until := ref.pending_until;
		RETURN;
	END IF;
	SELECT p.* INTO prog FROM loyalty.referral_program p WHERE p.program = ref.program;
	IF NOT FOUND OR NOT prog.active THEN
		status := 'program_inactive';
		RETURN;
	END IF;
	IF amount < prog.min_order_amount THEN
		status := 'below_minimum';
		reason := 'min_order_amount';
		RETURN;
	END IF;

	SELECT c.* INTO STRICT rc FROM loyalty.referral_code c
	WHERE c.customer_id = ref.referrer_id AND c.program = ref.program FOR UPDATE;
	period := pg_catalog.date_trunc(prog.cap_period, pg_catalog.timezone(loyalty._referral_zone(), at))::date;
	SELECT p.converted INTO in_period FROM loyalty.referral_period p
	WHERE p.customer_id = ref.referrer_id AND p.program = ref.program AND p.period_start = period;
	IF prog.cap_lifetime IS NOT NULL AND rc.converted >= prog.cap_lifetime THEN
		refusal := 'referrer_cap_lifetime';
	ELSIF prog.cap_per_period IS NOT NULL AND COALESCE(in_period, 0) >= prog.cap_per_period THEN
		refusal := 'referrer_cap_period';
	ELSIF loyalty._referral_standing(ref.referrer_id, prog) IS NOT NULL THEN
		refusal := 'referrer_not_in_good_standing';
	END IF;
	IF refusal IS NOT NULL THEN
		UPDATE loyalty.referral r
		SET status = 'refused', reason = refusal, order_ref = referral_order.order_ref,
			order_amount = amount, converted_at = at
		WHERE r.customer_id = p_customer;
		status := 'refused'; reason := refusal;
		RETURN;
	END IF;

	n_rank := rc.converted + 1;
	referrer_points := COALESCE((SELECT t.referrer_points FROM loyalty.referral_reward_tier t
								 WHERE t.program = prog.program AND t.from_count <= n_rank
								 ORDER BY t.from_count DESC LIMIT 1), prog.referrer_points);
	referee_points := prog.referee_points;
	pending_until := at + pg_catalog.make_interval(days => prog.return_window_days);

	UPDATE loyalty.referral_code c SET converted = c.converted + 1
	WHERE c.customer_id = ref.referrer_id AND c.program = ref.program;
	INSERT INTO loyalty.referral_period AS p (customer_id, program, period_start, converted)
	VALUES (ref.referrer_id, ref.program, period, 1)
	ON CONFLICT ON CONSTRAINT referral_period_pkey DO UPDATE SET converted = p.converted + 1;
	UPDATE loyalty.referral r
	SET status = 'converted', order_ref = referral_order.order_ref, order_amount = amount,
		converted_at = at, pending_until = referral_order.pending_until, rank = n_rank,
		referrer_points = referral_order.referrer_points, referee_points = referral_order.referee_points
	WHERE r.customer_id = p_customer;

	-- both rewards, pending until the return window closes, in customer_id order
	FOR side IN SELECT * FROM (VALUES (p_customer, 'referee'::text, referee_points),
									  (ref.referrer_id, 'referrer'::text, referrer_points)) AS s(who, role, pts)
				WHERE s.pts > 0 ORDER BY s.who COLLATE "C"
	LOOP
		PERFORM loyalty.points_earn(side.who, loyalty._referral_reference(p_customer, side.role), side.pts,
									at => at, reason => 'referral ' || side.role || ' reward (' || prog.program || ')',
									pending_until => pending_until, qualifying => false);
	END LOOP;
	status := 'converted';
END;
$$;

COMMENT ON FUNCTION loyalty.referral_order(text, text, numeric, timestamptz) IS
	'Report a referee''s purchase: the first of at least min_order_amount rewards both sides (points pending until the return window closes); status not_referred, below_minimum, program_inactive, converted, refused (reason), already_converted or revoked; idempotent on order_ref';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.referral_order(text, text, numeric, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * The referee's qualifying order was refunded: both rewards are taken back
 * (points_reverse: pending points cancelled, spent ones recorded as debt)
 * and the referral no longer counts for the referrer's caps and rank.
 * status: revoked (this call or a repeat), not_qualifying_order (another
 * order, or no conversion yet), not_referred.
 */
CREATE FUNCTION loyalty.referral_refund(customer_id text, order_ref text,
										at timestamptz DEFAULT pg_catalog.now(),
										OUT status text, OUT referrer_id text,
										OUT referrer_points bigint, OUT referee_points bigint)
RETURNS record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	p_customer text := customer_id;
	ref loyalty.referral;
	period date;
	side record;
BEGIN
	IF p_customer IS NULL OR order_ref IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, order_ref and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, p_customer);
	PERFORM loyalty._points_check_key('order_ref'::text, order_ref);

	SELECT r.* INTO ref FROM loyalty.referral r WHERE r.customer_id = p_customer FOR UPDATE;
	IF NOT FOUND THEN
		status := 'not_referred';
		RETURN;
	END IF;
	referrer_id := ref.referrer_id;
	referrer_points := ref.referrer_points; referee_points := ref.referee_points;
	IF ref.order_ref IS DISTINCT FROM order_ref OR ref.status NOT IN ('converted', 'revoked') THEN
		status := 'not_qualifying_order';
		referrer_points := NULL; referee_points := NULL;
		RETURN;
	END IF;
	status := 'revoked';
	IF ref.status = 'revoked' THEN
		RETURN;
	END IF;

	PERFORM 1 FROM loyalty.referral_code c
	WHERE c.customer_id = ref.referrer_id AND c.program = ref.program FOR UPDATE;
	UPDATE loyalty.referral_code c SET converted = c.converted - 1
	WHERE c.customer_id = ref.referrer_id AND c.program = ref.program;
	SELECT pg_catalog.date_trunc(p.cap_period, pg_catalog.timezone(loyalty._referral_zone(), ref.converted_at))::date
	INTO period FROM loyalty.referral_program p WHERE p.program = ref.program;
	UPDATE loyalty.referral_period p SET converted = p.converted - 1
	WHERE p.customer_id = ref.referrer_id AND p.program = ref.program AND p.period_start = period;
	UPDATE loyalty.referral r SET status = 'revoked', revoked_at = at WHERE r.customer_id = p_customer;

	FOR side IN SELECT * FROM (VALUES (p_customer, 'referee'::text, ref.referee_points),
									  (ref.referrer_id, 'referrer'::text, ref.referrer_points)) AS s(who, role, pts)
				WHERE s.pts > 0 ORDER BY s.who COLLATE "C"
	LOOP
		PERFORM loyalty.points_reverse(side.who, loyalty._referral_reference(p_customer, side.role), at => at);
	END LOOP;
END;
$$;

COMMENT ON FUNCTION loyalty.referral_refund(text, text, timestamptz) IS
	'The referee''s qualifying order was refunded: take both rewards back and uncount the referral from the referrer''s caps; status revoked, not_qualifying_order or not_referred; idempotent';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.referral_refund(text, text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* views */

CREATE VIEW loyalty.referral_leaderboard AS
SELECT c.program, c.customer_id AS referrer_id, c.code::text AS code,
	   pg_catalog.count(r.customer_id) AS joined,
	   c.converted AS successful,
	   pg_catalog.count(r.customer_id) FILTER (WHERE r.status = 'converted' AND r.pending_until > pg_catalog.now()) AS pending,
	   COALESCE(pg_catalog.sum(r.referrer_points) FILTER (WHERE r.status = 'converted'), 0)::bigint AS points_earned,
	   pg_catalog.rank() OVER (PARTITION BY c.program ORDER BY c.converted DESC) AS rank
FROM loyalty.referral_code c
LEFT JOIN loyalty.referral r ON r.referrer_id = c.customer_id AND r.program = c.program
GROUP BY c.program, c.customer_id, c.code, c.converted;

COMMENT ON VIEW loyalty.referral_leaderboard IS
	'Referrers ranked per program by successful referrals (converted, not revoked); joined friends, rewards still pending, points earned';
COMMENT ON COLUMN loyalty.referral_leaderboard.program IS 'The program';
COMMENT ON COLUMN loyalty.referral_leaderboard.referrer_id IS 'The referrer';
COMMENT ON COLUMN loyalty.referral_leaderboard.code IS 'The referrer''s code';
COMMENT ON COLUMN loyalty.referral_leaderboard.joined IS 'Friends who joined with the code';
COMMENT ON COLUMN loyalty.referral_leaderboard.successful IS 'Referrals rewarded and not revoked';
COMMENT ON COLUMN loyalty.referral_leaderboard.pending IS 'Of those, rewards still inside the return window';
COMMENT ON COLUMN loyalty.referral_leaderboard.points_earned IS 'Points credited to the referrer for them';
COMMENT ON COLUMN loyalty.referral_leaderboard.rank IS 'Rank in the program (ties share a rank)';

SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.referral_leaderboard'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.referral_leaderboard'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/*
 * Referral KPIs per program, for the campaign KPI views to union.  Revenue
 * of referred customers comes from the tracked statistics (as of the last
 * fold; NULL when no orders table is tracked), the qualifying revenue from
 * the qualifying orders; cost is the points of rewards not revoked times
 * point_value; ROI = (revenue - cost) / cost.
 */
CREATE VIEW loyalty.referral_kpi AS
WITH codes AS (
	SELECT c.program, pg_catalog.count(*) AS codes FROM loyalty.referral_code c GROUP BY c.program
), refs AS (
	SELECT r.program,
		   pg_catalog.count(*) AS joined,
		   pg_catalog.count(*) FILTER (WHERE r.status = 'converted') AS converted,
		   pg_catalog.count(*) FILTER (WHERE r.status = 'converted' AND r.pending_until > pg_catalog.now()) AS pending,
		   pg_catalog.count(*) FILTER (WHERE r.status = 'refused') AS refused,
		   pg_catalog.count(*) FILTER (WHERE r.status = 'revoked') AS revoked,
		   COALESCE(pg_catalog.sum(r.referrer_points + r.referee_points) FILTER (WHERE r.status = 'converted'), 0)::bigint AS points_cost,
		   COALESCE(pg_catalog.sum(r.order_amount) FILTER (WHERE r.status = 'converted'), 0) AS qualifying_revenue,
		   pg_catalog.sum(s.spend_total) AS referred_revenue
	FROM loyalty.referral r
	LEFT JOIN loyalty.customer_stats s ON s.customer_id = r.customer_id
	GROUP BY r.program
)
SELECT p.program,
	   COALESCE(c.codes, 0) AS codes,
	   COALESCE(r.joined, 0) AS invites_used,
	   COALESCE(r.converted, 0) AS conversions,
	   CASE WHEN r.joined > 0 THEN pg_catalog.round(r.converted::numeric / r.joined, 4) END AS conversion_rate,
	   COALESCE(r.pending, 0) AS pending,
	   COALESCE(r.refused, 0) AS refused,
	   COALESCE(r.revoked, 0) AS revoked,
	   COALESCE(r.points_cost, 0) AS points_cost,
	   r.points_cost * p.point_value AS cost,
	   COALESCE(r.qualifying_revenue, 0) AS qualifying_revenue,
	   r.referred_revenue,
	   CASE WHEN r.points_cost * p.point_value > 0
			THEN pg_catalog.round((COALESCE(r.referred_revenue, r.qualifying_revenue) - r.points_cost * p.point_value)
								  / (r.points_cost * p.point_value), 4) END AS roi
FROM loyalty.referral_program p
LEFT JOIN codes c ON c.program = p.program
LEFT JOIN refs r ON r.program = p.program;

COMMENT ON VIEW loyalty.referral_kpi IS
	'Referral KPIs per program: codes, invites used (joins), conversions, conversion rate, pending, refused, revoked, points cost and money cost, qualifying revenue, revenue of referred customers, ROI';
COMMENT ON COLUMN loyalty.referral_kpi.program IS 'The program';
COMMENT ON COLUMN loyalty.referral_kpi.codes IS 'Referral codes created';
COMMENT ON COLUMN loyalty.referral_kpi.invites_used IS 'Friends who joined with a code';
COMMENT ON COLUMN loyalty.referral_kpi.conversions IS 'Referrals rewarded and not revoked';
COMMENT ON COLUMN loyalty.referral_kpi.conversion_rate IS 'conversions / invites_used';
COMMENT ON COLUMN loyalty.referral_kpi.pending IS 'Conversions whose rewards are still pending (return window open)';
COMMENT ON COLUMN loyalty.referral_kpi.refused IS 'Purchases refused by a cap or the referrer''s standing';
COMMENT ON COLUMN loyalty.referral_kpi.revoked IS 'Conversions whose qualifying order was refunded';
COMMENT ON COLUMN loyalty.referral_kpi.points_cost IS 'Points of both sides'' rewards not revoked';
COMMENT ON COLUMN loyalty.referral_kpi.cost IS 'points_cost * point_value (NULL without point_value)';
COMMENT ON COLUMN loyalty.referral_kpi.qualifying_revenue IS 'Amount of the qualifying orders not revoked';
COMMENT ON COLUMN loyalty.referral_kpi.referred_revenue IS 'Tracked spend of all referees (loyalty.customer_stats as of the last fold; NULL when none is tracked)';
COMMENT ON COLUMN loyalty.referral_kpi.roi IS '(referred_revenue, else qualifying_revenue, - cost) / cost';

SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.referral_kpi'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.referral_kpi'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

-- Issue 17, missions: the mission family (src/mission/mission.sql, new in 0.3.0)
/* ---------------------------------------------------------------------------
 * mission.sql: missions (doc/missions.md)
 *
 * A mission is a target over a period: N orders (of a category) in D days,
 * a spend in a calendar month, an order in M months in a row (a streak), or
 * N events the app reports (reviews, shares, signups).  Recurrence: once,
 * again after each completion, or once per period.  Activation: automatic
 * or opt-in.  The reward is points through the ledger, pending until the
 * return window of the completing order closes; a refund rolls progress
 * back, and a completed attempt whose progress falls below the target
 * before its reward settles is undone (reward taken back).
 *
 * Progress comes from the orders the app reports (mission_order, in the
 * checkout transaction or from the app's own order trigger) and from
 * mission_event; each contribution is kept per (customer, mission, source
 * reference), which makes every call idempotent and every refund exact.
 *
 * Citus: every per-customer table is keyed by (customer_id COLLATE "C",
 * mission_id, ...); the mission catalogue is a configuration table without
 * triggers (a reference table).  Locks: the customer's attempt rows of a
 * mission, in mission_id order, then the points account.
 * ------------------------------------------------------------------------ */

/* tables */

CREATE TABLE loyalty.mission (
	mission_id		text COLLATE "C" PRIMARY KEY
		CONSTRAINT mission_id_check CHECK (pg_catalog.octet_length(mission_id) BETWEEN 1 AND 64),
	description		text,
	kind			text NOT NULL
		CONSTRAINT mission_kind_check CHECK (kind IN ('orders', 'spend', 'streak', 'event')),
	target			numeric NOT NULL CHECK (target > 0),
	category		text,
	event			text,
	min_amount		numeric NOT NULL DEFAULT 0 CHECK (min_amount >= 0),
	period			text NOT NULL DEFAULT 'days'
		CONSTRAINT mission_period_check CHECK (period IN ('days', 'month')),
	period_days		integer CHECK (period_days BETWEEN 1 AND 3660),
	recurrence		text NOT NULL DEFAULT 'once'
		CONSTRAINT mission_recurrence_check CHECK (recurrence IN ('once', 'repeat', 'each_period')),
	activation		text NOT NULL DEFAULT 'automatic'
		CONSTRAINT mission_activation_check CHECK (activation IN ('automatic', 'opt_in')),
	reward_points	bigint NOT NULL DEFAULT 0 CHECK (reward_points >= 0),
	pending_days	integer NOT NULL DEFAULT 0 CHECK (pending_days BETWEEN 0 AND 3660),
	starts_at		timestamptz,
	ends_at			timestamptz,
	active			boolean NOT NULL DEFAULT true,
	CONSTRAINT mission_shape_check CHECK (
		(kind = 'event') = (event IS NOT NULL)
		AND (kind = 'streak' OR period = 'month' OR period_days IS NOT NULL))
);

COMMENT ON TABLE loyalty.mission IS
	'Missions (configuration): a target over a period, its recurrence, activation and reward; no trigger, can be a Citus reference table';
COMMENT ON COLUMN loyalty.mission.mission_id IS 'Mission name (1 to 64 bytes)';
COMMENT ON COLUMN loyalty.mission.description IS 'Text for the customer (e.g. 3 orders of the new collection in 30 days)';
COMMENT ON COLUMN loyalty.mission.kind IS 'orders (count orders), spend (sum amounts), streak (months in a row with an order), event (count app events)';
COMMENT ON COLUMN loyalty.mission.target IS 'Orders, money, months or events to reach';
COMMENT ON COLUMN loyalty.mission.category IS 'orders / spend: only orders whose categories (mission_order) include it (NULL: every order)';
COMMENT ON COLUMN loyalty.mission.event IS 'event: the event name counted (review, share, signup, ...)';
COMMENT ON COLUMN loyalty.mission.min_amount IS 'Orders below this amount do not count';
COMMENT ON COLUMN loyalty.mission.period IS 'days: an attempt lasts period_days from its first progress (or opt-in); month: until the end of the calendar month (program time zone). Streaks have no period';
COMMENT ON COLUMN loyalty.mission.period_days IS 'Length of an attempt for period = days';
COMMENT ON COLUMN loyalty.mission.recurrence IS 'once (one completion ever), repeat (a new attempt after each completion), each_period (at most one completion per period)';
COMMENT ON COLUMN loyalty.mission.activation IS 'automatic (every customer) or opt_in (mission_join first)';
COMMENT ON COLUMN loyalty.mission.reward_points IS 'Points credited on completion (reference mission:<mission_id>:<customer_id>:<attempt>:<undone>)';
COMMENT ON COLUMN loyalty.mission.pending_days IS 'The reward stays pending this many days (the return window); a refund before then undoes the completion';
COMMENT ON COLUMN loyalty.mission.starts_at IS 'Progress counts from then (NULL: always)';
COMMENT ON COLUMN loyalty.mission.ends_at IS 'End date: no progress from then (NULL: open)';
COMMENT ON COLUMN loyalty.mission.active IS 'False: the mission is paused (no progress)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.mission'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.mission'::pg_catalog.regclass, 'SELECT, INSERT, UPDATE, DELETE'::pg_catalog.text);
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.mission'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.mission_optin (
	customer_id		text COLLATE "C" NOT NULL,
	mission_id		text COLLATE "C" NOT NULL,
	opted_at		timestamptz NOT NULL,
	PRIMARY KEY (customer_id, mission_id)
);

COMMENT ON TABLE loyalty.mission_optin IS 'Customers who opted in to an opt_in mission';
COMMENT ON COLUMN loyalty.mission_optin.customer_id IS 'The customer';
COMMENT ON COLUMN loyalty.mission_optin.mission_id IS 'The mission';
COMMENT ON COLUMN loyalty.mission_optin.opted_at IS 'Business time of the opt-in';

SELECT pg_catalog.pg_extension_config_dump('loyalty.mission_optin'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.mission_optin'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.mission_customer (
	customer_id		text COLLATE "C" NOT NULL PRIMARY KEY,
	last_at			timestamptz NOT NULL
);

COMMENT ON TABLE loyalty.mission_customer IS
	'One row per customer with mission progress: its lock serialises the customer''s mission calls (two orders of one customer at once count one after the other)';
COMMENT ON COLUMN loyalty.mission_customer.customer_id IS 'The customer';
COMMENT ON COLUMN loyalty.mission_customer.last_at IS 'Business time of the last order or event counted';

SELECT pg_catalog.pg_extension_config_dump('loyalty.mission_customer'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.mission_customer'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.mission_attempt (
	customer_id		text COLLATE "C" NOT NULL,
	mission_id		text COLLATE "C" NOT NULL,
	attempt			integer NOT NULL,
	started_at		timestamptz NOT NULL,
	ends_at			timestamptz,
	progress		numeric NOT NULL DEFAULT 0,
	last_month		date,
	status			text NOT NULL DEFAULT 'active'
		CONSTRAINT mission_attempt_status_check CHECK (status IN ('active', 'completed', 'expired')),
	completed_at	timestamptz,
	completed_by	text,
	reward_points	bigint,
	pending_until	timestamptz,
	undone			integer NOT NULL DEFAULT 0,
	PRIMARY KEY (customer_id, mission_id, attempt)
);

COMMENT ON TABLE loyalty.mission_attempt IS
	'Attempts of each customer at each mission: progress, period, completion and reward';
COMMENT ON COLUMN loyalty.mission_attempt.customer_id IS 'The customer';
COMMENT ON COLUMN loyalty.mission_attempt.mission_id IS 'The mission';
COMMENT ON COLUMN loyalty.mission_attempt.attempt IS '1, 2, ... (recurrence)';
COMMENT ON COLUMN loyalty.mission_attempt.started_at IS 'First progress or opt-in';
COMMENT ON COLUMN loyalty.mission_attempt.ends_at IS 'End of the attempt''s period (NULL: streaks, open)';
COMMENT ON COLUMN loyalty.mission_attempt.progress IS 'Orders, money, months in a row or events so far';
COMMENT ON COLUMN loyalty.mission_attempt.last_month IS 'Streaks: the last month counted (program time zone)';
COMMENT ON COLUMN loyalty.mission_attempt.status IS 'active, completed or expired (period over, or streak broken)';
COMMENT ON COLUMN loyalty.mission_attempt.completed_at IS 'Business time of completion';
COMMENT ON COLUMN loyalty.mission_attempt.completed_by IS 'Reference of the order or event that completed it';
COMMENT ON COLUMN loyalty.mission_attempt.reward_points IS 'Points credited';
COMMENT ON COLUMN loyalty.mission_attempt.pending_until IS 'The reward is pending until then; a refund before undoes the completion';
COMMENT ON COLUMN loyalty.mission_attempt.undone IS 'Completions undone by refunds (each took its reward back)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.mission_attempt'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.mission_attempt'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.mission_attempt'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.mission_contribution (
	customer_id		text COLLATE "C" NOT NULL,
	mission_id		text COLLATE "C" NOT NULL,
	source_ref		text NOT NULL,
	attempt			integer NOT NULL,
	delta			numeric NOT NULL,
	at				timestamptz NOT NULL,
	rolled_back_at	timestamptz,
	PRIMARY KEY (customer_id, mission_id, source_ref)
);

COMMENT ON TABLE loyalty.mission_contribution IS
	'What each order or event added to an attempt (one row per customer, mission and source reference: idempotence and exact refunds)';
COMMENT ON COLUMN loyalty.mission_contribution.customer_id IS 'The customer';
COMMENT ON COLUMN loyalty.mission_contribution.mission_id IS 'The mission';
COMMENT ON COLUMN loyalty.mission_contribution.source_ref IS 'order_ref (mission_order) or reference (mission_event)';
COMMENT ON COLUMN loyalty.mission_contribution.attempt IS 'The attempt it counted for';
COMMENT ON COLUMN loyalty.mission_contribution.delta IS 'What it added to the progress (0: counted nothing, e.g. a second order in a streak month)';
COMMENT ON COLUMN loyalty.mission_contribution.at IS 'Business time';
COMMENT ON COLUMN loyalty.mission_contribution.rolled_back_at IS 'When a refund took it back';

SELECT pg_catalog.pg_extension_config_dump('loyalty.mission_contribution'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.mission_contribution'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/* functions */

/*
 * The end of an attempt of a mission started at start: period_days later,
 * or the end of the calendar month (program time zone); NULL for streaks.
 */
CREATE FUNCTION loyalty._mission_period_end(m loyalty.mission, start timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE
		WHEN $1.kind OPERATOR(pg_catalog.=) 'streak' THEN NULL
		WHEN $1.period OPERATOR(pg_catalog.=) 'days'
			THEN $2 OPERATOR(pg_catalog.+) pg_catalog.make_interval(days => $1.period_days)
		ELSE pg_catalog.timezone(loyalty._referral_zone(),
				 pg_catalog.date_trunc('month', pg_catalog.timezone(loyalty._referral_zone(), $2))
				 OPERATOR(pg_catalog.+) '1 month'::interval)
	END
$$;

COMMENT ON FUNCTION loyalty._mission_period_end(loyalty.mission, timestamptz) IS
	'Internal: end of an attempt started at a time (NULL for streaks)';

/*
 * The points reference of a completion's reward:
 * mission:<mission_id>:<customer_id>:<attempt>:<undone> (references are
 * global, one owner each), the customer's id as SHA-256 hex when that
 * would pass the 256-byte limit.
 */
CREATE FUNCTION loyalty._mission_reference(customer_id text, mission_id text, attempt integer, undone integer)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT pg_catalog.concat_ws(':', 'mission', $2,
			   CASE WHEN pg_catalog.octet_length($1) OPERATOR(pg_catalog.<=) 160 THEN $1
					ELSE pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to($1, 'UTF8')), 'hex') END,
			   $3, $4)
$$;

COMMENT ON FUNCTION loyalty._mission_reference(text, text, integer, integer) IS
	'Internal: points reference of a mission reward (mission:<mission_id>:<customer_id>:<attempt>:<undone>)';

/*
 * Lock the customer's mission row (created on first use): the customer's
 * mission calls run one after the other, so two orders at once cannot both
 * start an attempt or both complete one.
 */
CREATE FUNCTION loyalty._mission_lock(customer_id text, at timestamptz)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	INSERT INTO loyalty.mission_customer AS c (customer_id, last_at) VALUES ($1, $2)
	ON CONFLICT ON CONSTRAINT mission_customer_pkey
	DO UPDATE SET last_at = GREATEST(c.last_at, EXCLUDED.last_at)
$$;

COMMENT ON FUNCTION loyalty._mission_lock(text, timestamptz) IS
	'Internal: lock (create) the customer''s mission row';

/*
 * Count one order or event (source_ref) for one mission of a customer: the
 * attempt it falls in (a new one when the last is over and the recurrence
 * allows), the progress, and on reaching the target the completion and
 * its reward.  Idempotent on (customer, mission, source_ref).  Returns the
 * attempt, or NULL when nothing counted.
 */
CREATE FUNCTION loyalty._mission_count(customer_id text, m loyalty.mission, source_ref text,
									   amount numeric, at timestamptz)
RETURNS loyalty.mission_attempt
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	a loyalty.mission_attempt;
	month date;
	delta numeric;
	fresh boolean := false;
BEGIN
	IF m.activation = 'opt_in' AND NOT EXISTS (
		SELECT 1 FROM loyalty.mission_optin o
		WHERE o.customer_id = customer_id AND o.mission_id = m.mission_id AND o.opted_at <= at) THEN
		RETURN NULL;
	END IF;
	SELECT x.* INTO a FROM loyalty.mission_attempt x
	WHERE x.customer_id = customer_id AND x.mission_id = m.mission_id
	ORDER BY x.attempt DESC LIMIT 1 FOR UPDATE;
	IF EXISTS (SELECT 1 FROM loyalty.mission_contribution c
			   WHERE c.customer_id = customer_id AND c.mission_id = m.mission_id AND c.source_ref = source_ref) THEN
		RETURN a;
	END IF;
	month := pg_catalog.date_trunc('month', pg_catalog.timezone(loyalty._referral_zone(), at))::date;

	IF a.attempt IS NOT NULL AND a.status = 'active' AND (
		   (a.ends_at IS NOT NULL AND at >= a.ends_at)
		OR (m.kind = 'streak' AND a.last_month IS NOT NULL AND month > (a.last_month + '1 month'::interval)::date)) THEN
		UPDATE loyalty.mission_attempt x SET status = 'expired'
		WHERE x.customer_id = customer_id AND x.mission_id = m.mission_id AND x.attempt = a.attempt;
		a.status := 'expired';
	END IF;
	IF a.attempt IS NULL OR a.status = 'expired'
	   OR (a.status = 'completed' AND (m.recurrence = 'repeat'
									   OR (m.recurrence = 'each_period' AND a.ends_at IS NOT NULL AND at >= a.ends_at))) THEN
		IF a.attempt IS NOT NULL AND a.status = 'completed' AND m.recurrence = 'once' THEN
			RETURN a;
		END IF;
		a.attempt := COALESCE(a.attempt, 0) + 1;
		a.started_at := at;
		a.ends_at := loyalty._mission_period_end(m, at);
		a.progress := 0;
		a.last_month := NULL;
		a.status := 'active';
		fresh := true;
	ELSIF a.status = 'completed' THEN
		RETURN a;
	END IF;

	delta := CASE m.kind
		WHEN 'spend' THEN amount
		WHEN 'streak' THEN CASE WHEN a.last_month IS NOT NULL AND month <= a.last_month THEN 0 ELSE 1 END
		ELSE 1 END;
	a.progress := a.progress + delta;
	IF m.kind = 'streak' AND delta > 0 THEN
		a.last_month := month;
	END IF;
	IF fresh THEN
		INSERT INTO loyalty.mission_attempt (customer_id, mission_id, attempt, started_at, ends_at, progress, last_month)
		VALUES (customer_id, m.mission_id, a.attempt, a.started_at, a.ends_at, a.progress, a.last_month);
	ELSE
		UPDATE loyalty.mission_attempt x SET progress = a.progress, last_month = a.last_month
		WHERE x.customer_id = customer_id AND x.mission_id = m.mission_id AND x.attempt = a.attempt;
	END IF;
	INSERT INTO loyalty.mission_contribution (customer_id, mission_id, source_ref, attempt, delta, at)
	VALUES (customer_id, m.mission_id, source_ref, a.attempt, delta, at);

	IF a.progress >= m.target THEN
		a.status := 'completed';
		a.completed_at := at;
		a.completed_by := source_ref;
		a.reward_points := m.reward_points;
		a.pending_until := at + pg_catalog.make_interval(days => m.pending_days);
		UPDATE loyalty.mission_attempt x
		SET status = 'completed', completed_at = a.completed_at, completed_by = a.completed_by,
			reward_points = a.reward_points, pending_until = a.pending_until
		WHERE x.customer_id = customer_id AND x.mission_id = m.mission_id AND x.attempt = a.attempt;
		IF m.reward_points > 0 THEN
			PERFORM loyalty.points_earn(customer_id,
										loyalty._mission_reference(customer_id, m.mission_id, a.attempt, a.undone),
										m.reward_points, at => at,
										reason => 'mission ' || m.mission_id || ' completed',
										pending_until => CASE WHEN m.pending_days > 0 THEN a.pending_until END,
										qualifying => false);
		END IF;
	END IF;
	RETURN a;
END;
$$;

COMMENT ON FUNCTION loyalty._mission_count(text, loyalty.mission, text, numeric, timestamptz) IS
	'Internal: count an order or event for one mission of a customer (attempt, progress, completion, reward); idempotent on the source reference';

/*
 * An opt-in: the customer takes part in an opt_in mission (an automatic
 * one needs none); the first attempt's period starts at the first progress.
 * Idempotent.  LM001 when the mission is missing, paused or over.
 */
CREATE FUNCTION loyalty.mission_join(customer_id text, mission_id text,
									 at timestamptz DEFAULT pg_catalog.now())
RETURNS timestamptz
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	m loyalty.mission;
	opted timestamptz;
BEGIN
	IF customer_id IS NULL OR mission_id IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, mission_id and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, customer_id);
	SELECT x.* INTO m FROM loyalty.mission x WHERE x.mission_id = mission_id;
	IF NOT FOUND OR NOT m.active OR m.ends_at <= at THEN
		RAISE EXCEPTION 'mission "%" is not open', mission_id
			USING ERRCODE = 'LM001',
				  DETAIL = pg_catalog.json_build_object('reason', 'mission_not_open', 'mission_id', mission_id,
								  'state', CASE WHEN m.mission_id IS NULL THEN 'missing' WHEN NOT m.active THEN 'paused'
												ELSE 'ended' END)::text;
	END IF;
	INSERT INTO loyalty.mission_optin AS o (customer_id, mission_id, opted_at)
	VALUES (customer_id, mission_id, at)
	ON CONFLICT ON CONSTRAINT mission_optin_pkey DO UPDATE SET opted_at = o.opted_at
	RETURNING o.opted_at INTO opted;
	RETURN opted;
END;
$$;

COMMENT ON FUNCTION loyalty.mission_join(text, text, timestamptz) IS
	'Opt in to a mission (idempotent; returns the first opt-in time); LM001 mission missing, paused or ended';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.mission_join(text, text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * An order of the customer counts for every open mission of kind orders,
 * spend or streak it qualifies for (category among the order's categories,
 * amount >= min_amount), in mission_id order.  Returns the attempts it
 * counted for.  Idempotent on order_ref.
 */
CREATE FUNCTION loyalty.mission_order(customer_id text, order_ref text, amount numeric,
									  at timestamptz DEFAULT pg_catalog.now(),
									  categories text[] DEFAULT NULL)
RETURNS TABLE (mission_id text, attempt integer, progress numeric, target numeric, status text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	m loyalty.mission;
	a loyalty.mission_attempt;
	locked boolean := false;
BEGIN
	IF customer_id IS NULL OR order_ref IS NULL OR amount IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, order_ref, amount and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, customer_id);
	PERFORM loyalty._points_check_key('order_ref'::text, order_ref);
	FOR m IN SELECT x.* FROM loyalty.mission x
			 WHERE x.active AND x.kind IN ('orders', 'spend', 'streak')
			   AND (x.starts_at IS NULL OR x.starts_at <= at) AND (x.ends_at IS NULL OR at < x.ends_at)
			   AND amount >= x.min_amount
			   AND (x.category IS NULL OR x.category = ANY (categories))
			 ORDER BY x.mission_id
	LOOP
		IF NOT locked THEN
			PERFORM loyalty._mission_lock(customer_id, at);
			locked := true;
		END IF;
		a := loyalty._mission_count(customer_id, m, order_ref, amount, at);
		IF a.attempt IS NOT NULL THEN
			mission_id := m.mission_id; attempt := a.attempt; progress := a.progress;
			target := m.target; status := a.status;
			RETURN NEXT;
		END IF;
	END LOOP;
END;
$$;

COMMENT ON FUNCTION loyalty.mission_order(text, text, numeric, timestamptz, text[]) IS
	'Count an order for the customer''s open order, spend and streak missions (categories => the order''s categories); completion credits the reward; idempotent on order_ref';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.mission_order(text, text, numeric, timestamptz, text[])'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* An app event (review, share, signup, ...) counts for the open event missions naming it; idempotent on reference. */
CREATE FUNCTION loyalty.mission_event(customer_id text, reference text, event text,
									  at timestamptz DEFAULT pg_catalog.now())
RETURNS TABLE (mission_id text, attempt integer, progress numeric, target numeric, status text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	m loyalty.mission;
	a loyalty.mission_attempt;
	locked boolean := false;
BEGIN
	IF customer_id IS NULL OR reference IS NULL OR event IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, reference, event and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, customer_id);
	PERFORM loyalty._points_check_key('reference'::text, reference);
	FOR m IN SELECT x.* FROM loyalty.mission x
			 WHERE x.active AND x.kind = 'event' AND x.event = event
			   AND (x.starts_at IS NULL OR x.starts_at <= at) AND (x.ends_at IS NULL OR at < x.ends_at)
			 ORDER BY x.mission_id
	LOOP
		IF NOT locked THEN
			PERFORM loyalty._mission_lock(customer_id, at);
			locked := true;
		END IF;
		a := loyalty._mission_count(customer_id, m, reference, 1, at);
		IF a.attempt IS NOT NULL THEN
			mission_id := m.mission_id; attempt := a.attempt; progress := a.progress;
			target := m.target; status := a.status;
			RETURN NEXT;
		END IF;
	END LOOP;
END;
$$;

COMMENT ON FUNCTION loyalty.mission_event(text, text, text, timestamptz) IS
	'Count an app event (review, share, signup, ...) for the customer''s open event missions naming it; idempotent on reference';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.mission_event(text, text, text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * A refund (or a withdrawn event): every contribution of the reference is
 * taken back from its attempt.  A completed attempt that falls below its
 * target before its reward settles (at < pending_until) is undone: the
 * reward is reversed and the attempt is active again (its period is kept).
 * After the reward settled the completion stands.  Idempotent.
 */
CREATE FUNCTION loyalty.mission_refund(customer_id text, order_ref text,
									   at timestamptz DEFAULT pg_catalog.now())
RETURNS TABLE (mission_id text, attempt integer, progress numeric, target numeric, status text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	c record;
	a loyalty.mission_attempt;
BEGIN
	IF customer_id IS NULL OR order_ref IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, order_ref and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, customer_id);
	IF EXISTS (SELECT 1 FROM loyalty.mission_contribution k
			   WHERE k.customer_id = customer_id AND k.source_ref = order_ref AND k.rolled_back_at IS NULL) THEN
		PERFORM loyalty._mission_lock(customer_id, at);
	END IF;
	FOR c IN SELECT k.mission_id, k.attempt, k.delta, m.target AS m_target
			 FROM loyalty.mission_contribution k JOIN loyalty.mission m ON m.mission_id = k.mission_id
			 WHERE k.customer_id = customer_id AND k.source_ref = order_ref AND k.rolled_back_at IS NULL
			 ORDER BY k.mission_id
	LOOP
		SELECT x.* INTO a FROM loyalty.mission_attempt x
		WHERE x.customer_id = customer_id AND x.mission_id = c.mission_id AND x.attempt = c.attempt FOR UPDATE;
		UPDATE loyalty.mission_contribution k SET rolled_back_at = at
		WHERE k.customer_id = customer_id AND k.mission_id = c.mission_id AND k.source_ref = order_ref;
		a.progress := a.progress - c.delta;
		IF a.status = 'completed' AND a.progress < c.m_target AND at < a.pending_until THEN
			IF a.reward_points > 0 THEN
				PERFORM loyalty.points_reverse(customer_id,
											   loyalty._mission_reference(customer_id, c.mission_id, a.attempt, a.undone), at => at);
			END IF;
			a.status := 'active';
			a.undone := a.undone + 1;
			a.completed_at := NULL; a.completed_by := NULL; a.reward_points := NULL; a.pending_until := NULL;
		END IF;
		UPDATE loyalty.mission_attempt x
		SET progress = a.progress, status = a.status, undone = a.undone, completed_at = a.completed_at,
			completed_by = a.completed_by, reward_points = a.reward_points, pending_until = a.pending_until
		WHERE x.customer_id = customer_id AND x.mission_id = c.mission_id AND x.attempt = c.attempt;
		mission_id := c.mission_id; attempt := a.attempt; progress := a.progress;
		target := c.m_target; status := a.status;
		RETURN NEXT;
	END LOOP;
END;
$$;

COMMENT ON FUNCTION loyalty.mission_refund(text, text, timestamptz) IS
	'Take back what an order (or event reference) added to missions; a completion whose reward is still pending is undone (reward reversed); idempotent';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.mission_refund(text, text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * Progress of a customer on every open mission ("2 of 3 orders, 12 days
 * left"): the current attempt, or 0 of the target when none started.
 */
CREATE FUNCTION loyalty.mission_progress(customer_id text, at timestamptz DEFAULT pg_catalog.now())
RETURNS TABLE (mission_id text, description text, attempt integer, progress numeric, target numeric,
			   status text, ends_at timestamptz, days_left integer, message text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT m.mission_id, m.description, a.attempt,
		   COALESCE(p.progress, 0), m.target, COALESCE(p.status, 'not_started'),
		   p.ends_at,
		   CASE WHEN p.ends_at IS NOT NULL
				THEN GREATEST(0, pg_catalog.ceil(pg_catalog.date_part('epoch', p.ends_at - $2) / 86400)::integer) END,
		   pg_catalog.format('%s of %s %s%s',
				  COALESCE(p.progress, 0)::text, m.target::text,
				  CASE m.kind WHEN 'orders' THEN 'orders' WHEN 'spend' THEN 'spent'
							  WHEN 'streak' THEN 'months in a row' ELSE m.event || 's' END,
				  CASE WHEN p.status = 'completed' THEN ', completed'
					   WHEN p.ends_at IS NOT NULL
					   THEN pg_catalog.format(', %s days left',
							   GREATEST(0, pg_catalog.ceil(pg_catalog.date_part('epoch', p.ends_at - $2) / 86400)::integer))
					   ELSE '' END)
	FROM loyalty.mission m
	LEFT JOIN LATERAL (SELECT x.* FROM loyalty.mission_attempt x
					   WHERE x.customer_id = $1 AND x.mission_id = m.mission_id
					   ORDER BY x.attempt DESC LIMIT 1) a ON true
	LEFT JOIN LATERAL (SELECT a.progress, a.ends_at,
							  CASE WHEN a.status = 'active' AND a.ends_at <= $2 THEN 'expired' ELSE a.status END AS status) p
		   ON a.attempt IS NOT NULL
	WHERE m.active AND (m.ends_at IS NULL OR $2 < m.ends_at)
	  AND (m.activation = 'automatic'
		   OR EXISTS (SELECT 1 FROM loyalty.mission_optin o WHERE o.customer_id = $1 AND o.mission_id = m.mission_id))
	ORDER BY m.mission_id
$$;

COMMENT ON FUNCTION loyalty.mission_progress(text, timestamptz) IS
	'Progress of a customer on every open mission (automatic, or opted in): attempt, progress of target, status, days left, and a message such as "2 of 3 orders, 12 days left"';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.mission_progress(text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* views */

CREATE VIEW loyalty.mission_stats AS
SELECT m.mission_id, m.kind, m.target,
	   pg_catalog.count(DISTINCT a.customer_id) AS customers,
	   pg_catalog.count(a.attempt) AS started,
	   pg_catalog.count(a.attempt) FILTER (WHERE a.status = 'completed') AS completed,
	   CASE WHEN pg_catalog.count(a.attempt) > 0
			THEN pg_catalog.round(pg_catalog.count(a.attempt) FILTER (WHERE a.status = 'completed')::numeric
								  / pg_catalog.count(a.attempt), 4) END AS completion_rate,
	   COALESCE(pg_catalog.sum(a.undone), 0)::bigint AS undone,
	   COALESCE(pg_catalog.sum(a.reward_points) FILTER (WHERE a.status = 'completed'), 0)::bigint AS points_cost
FROM loyalty.mission m
LEFT JOIN loyalty.mission_attempt a ON a.mission_id = m.mission_id
GROUP BY m.mission_id, m.kind, m.target;

COMMENT ON VIEW loyalty.mission_stats IS
	'Per mission: customers, attempts started and completed, completion rate, completions undone by refunds, points cost';
COMMENT ON COLUMN loyalty.mission_stats.mission_id IS 'The mission';
COMMENT ON COLUMN loyalty.mission_stats.kind IS 'orders, spend, streak or event';
COMMENT ON COLUMN loyalty.mission_stats.target IS 'The target';
COMMENT ON COLUMN loyalty.mission_stats.customers IS 'Customers with an attempt';
COMMENT ON COLUMN loyalty.mission_stats.started IS 'Attempts started';
COMMENT ON COLUMN loyalty.mission_stats.completed IS 'Attempts completed (not undone)';
COMMENT ON COLUMN loyalty.mission_stats.completion_rate IS 'completed / started';
COMMENT ON COLUMN loyalty.mission_stats.undone IS 'Completions undone by refunds';
COMMENT ON COLUMN loyalty.mission_stats.points_cost IS 'Reward points of the completed attempts';

SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.mission_stats'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.mission_stats'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

-- Issue 11, points (reversal into debt): earlier versions wrote a reversal
-- that had no lot to take back, no qualifying points and no amount (a
-- non-qualifying earning, e.g. a referral reward, spent entirely before it
-- was reversed) with the plain-spend statement, which leaves the account's
-- lifetime_earned unchanged: the account kept the reversed points in its
-- lifetime total (check_integrity: "totals differ from ledger").  Only that
-- total was wrong (balances, debt, lots and ledger were right): it is
-- recomputed from the ledger, as check_integrity() derives it (earned, less
-- reversed earnings, less what partial returns of unreversed ones took),
-- for the accounts where the two differ.  Data only, no catalog change.
WITH reversed AS (
	SELECT unnest(r.reverses) AS entry_id
	FROM loyalty.points_ledger r WHERE r.kind = 'reverse'
), derived AS (
	SELECT e.customer_id,
		   coalesce(sum(e.points) FILTER (WHERE e.kind = 'earn'), 0)
		   - coalesce(sum(e.points) FILTER (WHERE e.kind = 'earn'
											AND e.entry_id IN (SELECT x.entry_id FROM reversed x)), 0)
		   - coalesce(sum((e.detail ->> 'taken')::bigint)
						  FILTER (WHERE e.kind = 'return'
									AND NOT e.reverses[1] IN (SELECT x.entry_id FROM reversed x)), 0)
			   AS lifetime
	FROM loyalty.points_ledger e
	GROUP BY e.customer_id
)
UPDATE loyalty.points_account a SET lifetime_earned = d.lifetime
FROM derived d
WHERE d.customer_id = a.customer_id AND a.lifetime_earned <> d.lifetime;

/* ---------------------------------------------------------------------------
 * Issue 14, Citus-ready coupon schema: every per-customer coupon table keyed
 * by (customer_id, ...) with customer_id text COLLATE "C" (the collation of
 * customer_stats); "one customer per order_ref" moves to the new
 * loyalty.coupon_order_owner (claimed by the first reserve / redeem of an
 * order, filled here from the recorded orders); the ledger's "one
 * redemption per (order, code)" becomes unique per (customer_id, order_ref,
 * code), which the owner makes global.  The three PL/pgSQL checkout
 * functions name the customer in every statement.
 * ------------------------------------------------------------------------ */
-- campaign_stats reads redemption.customer_id: dropped, altered, created again
DROP VIEW loyalty.campaign_stats;

ALTER TABLE loyalty.coupon ALTER COLUMN customer_id TYPE text COLLATE "C";

/*
 * The one owner of each coupon order_ref: "an order belongs to exactly one
 * customer" is its primary key.  The first reserve / redeem of an order
 * claims it (INSERT ... ON CONFLICT DO NOTHING, then the owner is read), so
 * two customers racing for one order_ref serialise on the unique index and
 * the second gets order_mismatch.  Every other coupon table is keyed by
 * (customer_id, ...); with the owner unique, (customer_id, order_ref, code)
 * unique in the ledger is "one redemption per order and code" globally.
 * Citus: the documented exception to "per-customer tables are keyed by
 * customer": an order_ref is global by definition, so this table is
 * distributed by order_ref in its own colocation group (a claim is one
 * single-shard insert inside the call's distributed transaction), as
 * loyalty.points_reference is for points references.
 */
CREATE TABLE loyalty.coupon_order_owner (
	order_ref		text COLLATE "C" PRIMARY KEY,
	customer_id		text COLLATE "C" NOT NULL,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now()
);

COMMENT ON TABLE loyalty.coupon_order_owner IS
	'Owner of every coupon order_ref: one customer per order, by primary key (claimed by the first reserve or redeem of the order)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.coupon_order_owner', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.coupon_order_owner'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

INSERT INTO loyalty.coupon_order_owner (order_ref, customer_id, created_at)
SELECT o.order_ref, o.customer_id, o.created_at FROM loyalty.coupon_order o;

ALTER TABLE loyalty.coupon_order DROP CONSTRAINT coupon_order_pkey;
ALTER TABLE loyalty.coupon_order
	ALTER COLUMN order_ref TYPE text COLLATE "C",
	ALTER COLUMN customer_id TYPE text COLLATE "C",
	ADD PRIMARY KEY (customer_id, order_ref);

DROP INDEX loyalty.redemption_order_coupon_key;
DROP INDEX loyalty.redemption_reverses_key;
ALTER TABLE loyalty.redemption DROP CONSTRAINT redemption_pkey;
ALTER TABLE loyalty.redemption
	ALTER COLUMN customer_id TYPE text COLLATE "C",
	ALTER COLUMN order_ref TYPE text COLLATE "C",
	ADD PRIMARY KEY (customer_id, redemption_id);
CREATE UNIQUE INDEX redemption_order_coupon_key ON loyalty.redemption (customer_id, order_ref, coupon_id)
	WHERE kind = 'redeem';
CREATE UNIQUE INDEX redemption_reverses_key ON loyalty.redemption (customer_id, reverses)
	WHERE reverses IS NOT NULL;

DROP INDEX loyalty.reservation_order_coupon_key;
ALTER TABLE loyalty.reservation DROP CONSTRAINT reservation_pkey;
ALTER TABLE loyalty.reservation
	ALTER COLUMN customer_id TYPE text COLLATE "C",
	ALTER COLUMN order_ref TYPE text COLLATE "C",
	ADD PRIMARY KEY (customer_id, reservation_id);
CREATE UNIQUE INDEX reservation_order_coupon_key ON loyalty.reservation (customer_id, order_ref, coupon_id)
	WHERE state = 'held';

CREATE VIEW loyalty.campaign_stats AS
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

COMMENT ON VIEW loyalty.campaign_stats IS
	'Per campaign: codes, redemptions, rollbacks, active redemptions, customers, net discount total, active reservations, remaining cap';

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


ALTER TABLE loyalty.coupon_return
	ALTER COLUMN customer_id TYPE text COLLATE "C",
	ALTER COLUMN order_ref TYPE text COLLATE "C",
	ALTER COLUMN return_ref TYPE text COLLATE "C";
ALTER TABLE loyalty.coupon_return_line
	ALTER COLUMN customer_id TYPE text COLLATE "C",
	ALTER COLUMN order_ref TYPE text COLLATE "C",
	ALTER COLUMN return_ref TYPE text COLLATE "C";

CREATE OR REPLACE FUNCTION loyalty.coupon_release(customer_id text, order_ref text, code text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	owner text;
	o record;
	k record;
	-- a variable, not clock_timestamp() in the UPDATEs: Citus refuses a
	-- volatile function in an UPDATE of a distributed table
	now_ts timestamptz := clock_timestamp();
BEGIN
	IF customer_id IS NULL OR order_ref IS NULL OR code IS NULL THEN
		RAISE EXCEPTION 'customer_id, order_ref and code must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	-- the order row under its owner (one statement per table: routed on Citus)
	SELECT w.customer_id INTO owner FROM loyalty.coupon_order_owner w
	WHERE w.order_ref = coupon_release.order_ref;
	SELECT t.customer_id, t.state INTO o FROM loyalty.coupon_order t
	WHERE t.customer_id = owner AND t.order_ref = coupon_release.order_ref FOR NO KEY UPDATE;
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
			   WHERE r.customer_id = o.customer_id AND r.order_ref = coupon_release.order_ref
				 AND r.coupon_id = k.coupon_id AND r.kind = 'redeem'
				 AND NOT EXISTS (SELECT 1 FROM loyalty.redemption x
								 WHERE x.customer_id = r.customer_id AND x.reverses = r.redemption_id)) THEN
		RAISE EXCEPTION 'coupon % cannot be released: already_redeemed', k.printed
			USING ERRCODE = 'LY022',
				  DETAIL = jsonb_build_object('reason', 'already_redeemed', 'code', k.printed,
											 'order_ref', coupon_release.order_ref)::text,
				  HINT = 'The coupon is redeemed for this order; take its discount back with coupon_return_lines or rollback_redemption.';
	END IF;
	UPDATE loyalty.reservation h SET state = 'released', ended_at = now_ts
	WHERE h.customer_id = o.customer_id AND h.order_ref = coupon_release.order_ref
	  AND h.coupon_id = k.coupon_id AND h.state = 'held';
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	UPDATE loyalty.coupon_order t SET updated_at = now_ts
	WHERE t.customer_id = o.customer_id AND t.order_ref = coupon_release.order_ref;
	RETURN true;
END;
$$;

CREATE OR REPLACE FUNCTION loyalty.coupon_order_lines(customer_id text, order_ref text)
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
		WHERE r.customer_id = coupon_order_lines.customer_id
		  AND r.order_ref = coupon_order_lines.order_ref AND r.kind = 'redeem'
		  AND NOT EXISTS (SELECT 1 FROM loyalty.redemption x
						  WHERE x.customer_id = r.customer_id AND x.reverses = r.redemption_id)
		UNION ALL
		SELECT h.coupon_id, 'reserved', h.discount, h.line_discounts
		FROM loyalty.reservation h
		WHERE h.customer_id = coupon_order_lines.customer_id
		  AND h.order_ref = coupon_order_lines.order_ref AND h.state = 'held'
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

CREATE OR REPLACE FUNCTION loyalty.coupon_return_lines(customer_id text, order_ref text,
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
	WHERE t.customer_id = coupon_return_lines.customer_id
	  AND t.order_ref = coupon_return_lines.order_ref FOR NO KEY UPDATE;
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
		WHERE r.customer_id = coupon_return_lines.customer_id
		  AND r.order_ref = coupon_return_lines.order_ref AND r.kind = 'redeem'
		  AND r.line_discounts IS NOT NULL
		  AND NOT EXISTS (SELECT 1 FROM loyalty.redemption x
						  WHERE x.customer_id = r.customer_id AND x.reverses = r.redemption_id)
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
	UPDATE loyalty.coupon_order t SET updated_at = now_ts
	WHERE t.customer_id = coupon_return_lines.customer_id AND t.order_ref = coupon_return_lines.order_ref;
	RETURN total;
END;
$$;


-- Issue 14: the RFM configuration trigger reads the table it fires on (a Citus placement)
CREATE OR REPLACE FUNCTION loyalty._rfm_config_trigger()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	present boolean;
BEGIN
	IF TG_OP = 'DELETE' THEN
		RAISE EXCEPTION 'the RFM configuration row cannot be deleted'
			USING ERRCODE = 'restrict_violation',
				  HINT = 'UPDATE loyalty.rfm_config to change it.';
	END IF;
	/*
	 * The table the trigger fires on (TG_RELID), not loyalty.rfm_config by
	 * name: on Citus the trigger fires on each placement of the reference
	 * table (a full copy), where reading the table by name would be a
	 * distributed query inside Citus's own write of the placement (its copy
	 * of the table deadlocked on it).  Without Citus it is rfm_config.
	 */
	IF TG_OP = 'INSERT' THEN
		EXECUTE pg_catalog.format('SELECT EXISTS (SELECT 1 FROM %s)', TG_RELID::pg_catalog.regclass)
			INTO present;
		IF present THEN
			EXECUTE pg_catalog.format(
				'UPDATE %s SET bins = ($1).bins, scoring_window = ($1).scoring_window,'
				' monetary = ($1).monetary, method = ($1).method,'
				' recency_thresholds = ($1).recency_thresholds,'
				' frequency_thresholds = ($1).frequency_thresholds,'
				' monetary_thresholds = ($1).monetary_thresholds,'
				' bucket_retention = ($1).bucket_retention,'
				' inactive_after = ($1).inactive_after, updated_at = ($1).updated_at',
				TG_RELID::pg_catalog.regclass) USING NEW;
			RETURN NULL;
		END IF;
	END IF;
	PERFORM loyalty._rfm_config_validate(NEW.bins, NEW.scoring_window, NEW.monetary,
										 NEW.method, NEW.recency_thresholds,
										 NEW.frequency_thresholds, NEW.monetary_thresholds,
										 NEW.bucket_retention, NEW.inactive_after);
	/* a change of the settings that does not set updated_at itself is stamped */
	IF TG_OP = 'UPDATE' AND NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at
	   AND (NEW.bins, NEW.scoring_window, NEW.monetary, NEW.method, NEW.recency_thresholds,
			NEW.frequency_thresholds, NEW.monetary_thresholds, NEW.bucket_retention,
			NEW.inactive_after)
		   IS DISTINCT FROM
		   (OLD.bins, OLD.scoring_window, OLD.monetary, OLD.method, OLD.recency_thresholds,
			OLD.frequency_thresholds, OLD.monetary_thresholds, OLD.bucket_retention,
			OLD.inactive_after) THEN
		NEW.updated_at := pg_catalog.now();
	END IF;
	RETURN NEW;
END;
$$;



-- Issue 14: loyalty.citus_setup() as src/citus/citus.sql installs it
/* ---------------------------------------------------------------------------
 * citus.sql: loyalty.citus_setup(), run once by an admin on a Citus
 * coordinator after CREATE EXTENSION loyalty (doc/citus.md).
 *
 * loyalty does not depend on Citus: nothing here is resolved until the
 * function runs, which checks that the citus extension is installed and
 * calls Citus's functions (in pg_catalog, where no other role can create
 * one) by their qualified names through EXECUTE.
 *
 * What it does, each step skipped when already done (it can run again):
 *	- configuration tables become reference tables (a copy on every node),
 *	  except segment and segment_rule, not yet (reported);
 *	  Citus refuses a table with triggers unless citus.enable_unsafe_triggers
 *	  is on, which it sets for the transaction: the triggers then run on
 *	  every placement;
 *	- per-customer tables are distributed by customer_id, colocated with
 *	  loyalty.customer_stats (the shop's orders table, distributed by a text
 *	  COLLATE "C" customer key, can be colocated with them too); a table
 *	  whose primary key or a unique index does not include customer_id, or
 *	  whose customer_id is not text COLLATE "C", cannot be distributed and
 *	  colocated: it is reported, not changed;
 *	- the owner tables of caller references (coupon_order_owner,
 *	  points_reference) are distributed by the reference, each in its own
 *	  colocation group: a reference is global, not per customer;
 *	- with distribute_functions => true, the per-customer API functions are
 *	  distributed by their customer_id argument, colocated with
 *	  customer_stats (no force_delegation: a call inside a transaction
 *	  block stays on the coordinator).
 * One row per object: what was done, or why not.
 * ------------------------------------------------------------------------ */

CREATE FUNCTION loyalty.citus_setup(distribute_functions boolean DEFAULT false)
RETURNS TABLE (object text, action text, result text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	ref_tables text[] := ARRAY['settings', 'tracked_table', 'rfm_config', 'segment_snapshot',
		'segment_summary', 'campaign', 'campaign_rule',
		'eligibility_kind', 'coupon', 'points_program', 'tier', 'earning_rule',
		'points_reward'];
	customer_tables text[] := ARRAY['customer_stats', 'customer_stats_delta',
		'segment_change', 'coupon_order', 'redemption', 'reservation', 'coupon_return',
		'coupon_return_line', 'points_account', 'points_lot', 'points_ledger',
		'points_qualifying', 'points_rule_usage', 'tier_history', 'points_exchange',
		'coupon_bonus'];
	points_config text[] := ARRAY['points_program', 'tier', 'earning_rule', 'points_reward'];
	-- their triggers read and write the whole segment map by the tables'
	-- names: on a placement that is a distributed query inside Citus's copy
	-- (it deadlocks); not reference tables yet
	local_tables text[] := ARRAY['segment', 'segment_rule'];
	owner_tables text[] := ARRAY['coupon_order_owner:order_ref', 'points_reference:reference'];
	functions text[] := ARRAY['coupon_validate', 'coupon_reserve', 'coupon_redeem',
		'coupon_rollback', 'coupon_release', 'coupon_order_lines', 'coupon_return_lines',
		'coupon_update_order', 'customer_rfm'];
	t text;
	rel regclass;
	col text;
	fn regprocedure;
	points_ok boolean := true;	-- every points table can be distributed
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus') THEN
		RAISE EXCEPTION 'citus_setup needs the citus extension'
			USING ERRCODE = 'feature_not_supported',
				  DETAIL = 'CREATE EXTENSION citus on the coordinator (shared_preload_libraries = ''citus''), add the workers, then run loyalty.citus_setup().';
	END IF;
	PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
	-- the points family moves as a whole: one statement of a points call
	-- may not mix tables on the coordinator with distributed or reference ones
	points_ok := NOT EXISTS (
		SELECT 1 FROM unnest(customer_tables) AS x(t)
		WHERE (x.t LIKE 'points%' OR x.t IN ('tier_history', 'coupon_bonus'))
		  AND pg_catalog.to_regclass('loyalty.' || x.t) IS NOT NULL
		  AND NOT loyalty._citus_is_distributed(pg_catalog.to_regclass('loyalty.' || x.t))
		  AND loyalty._citus_not_distributable(pg_catalog.to_regclass('loyalty.' || x.t)) IS NOT NULL);

	FOREACH t IN ARRAY ref_tables LOOP
		rel := pg_catalog.to_regclass('loyalty.' || t);
		CONTINUE WHEN rel IS NULL;
		object := rel::text;
		action := 'reference table';
		IF loyalty._citus_is_distributed(rel) THEN
			result := 'already';
		ELSIF t = ANY (points_config) AND NOT points_ok THEN
			result := 'not done: a points table cannot be distributed; the points tables stay on the coordinator together';
		ELSE
			-- the coordinator's own rows of a configuration table (a few)
			-- stay on disk, invisible: rfm_config refuses TRUNCATE
			EXECUTE 'SELECT pg_catalog.create_reference_table($1)' USING rel;
			result := 'done';
		END IF;
		RETURN NEXT;
	END LOOP;

	FOREACH t IN ARRAY local_tables LOOP
		rel := pg_catalog.to_regclass('loyalty.' || t);
		CONTINUE WHEN rel IS NULL OR loyalty._citus_is_distributed(rel);
		object := rel::text;
		action := 'reference table';
		result := 'not done: its triggers read the table by name, which deadlocks in Citus''s copy; it stays on the coordinator';
		RETURN NEXT;
	END LOOP;

	FOREACH t IN ARRAY customer_tables LOOP
		rel := pg_catalog.to_regclass('loyalty.' || t);
		CONTINUE WHEN rel IS NULL;
		object := rel::text;
		action := 'distributed by customer_id, colocated with loyalty.customer_stats';
		result := NULL;
		IF loyalty._citus_is_distributed(rel) THEN
			result := 'already';
		ELSIF loyalty._citus_not_distributable(rel) IS NOT NULL THEN
			result := 'not done: ' || loyalty._citus_not_distributable(rel);
		ELSIF (t LIKE 'points%' OR t IN ('tier_history', 'coupon_bonus')) AND NOT points_ok THEN
			result := 'not done: another points table cannot be distributed; the points tables stay on the coordinator together';
		END IF;
		IF result IS NULL THEN
			EXECUTE 'SELECT pg_catalog.create_distributed_table($1, $2, colocate_with => $3)'
				USING rel, 'customer_id'::text,
					  CASE WHEN t = 'customer_stats' THEN 'default' ELSE 'loyalty.customer_stats' END;
			EXECUTE 'SELECT pg_catalog.truncate_local_data_after_distributing_table($1)' USING rel;
			result := 'done';
		END IF;
		RETURN NEXT;
	END LOOP;

	FOREACH t IN ARRAY owner_tables LOOP
		rel := pg_catalog.to_regclass('loyalty.' || split_part(t, ':', 1));
		CONTINUE WHEN rel IS NULL;
		col := split_part(t, ':', 2);
		object := rel::text;
		action := format('distributed by %s in its own colocation group', col);
		IF loyalty._citus_is_distributed(rel) THEN
			result := 'already';
		ELSIF rel = 'loyalty.points_reference'::regclass AND NOT points_ok THEN
			-- one statement of a points call may not mix it with local tables
			result := 'not done: a points table cannot be distributed; the points tables stay on the coordinator together';
		ELSE
			EXECUTE 'SELECT pg_catalog.create_distributed_table($1, $2, colocate_with => ''none'')'
				USING rel, col;
			EXECUTE 'SELECT pg_catalog.truncate_local_data_after_distributing_table($1)' USING rel;
			result := 'done';
		END IF;
		RETURN NEXT;
	END LOOP;

	IF distribute_functions THEN
		FOR fn IN
			SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
			WHERE p.pronamespace = 'loyalty'::regnamespace AND p.proname = ANY (functions)
			  AND p.proargnames[1] = 'customer_id'
			ORDER BY 1
		LOOP
			object := fn::text;
			action := 'function distributed by customer_id';
			EXECUTE 'SELECT pg_catalog.create_distributed_function($1, ''customer_id'', colocate_with => ''loyalty.customer_stats'')'
				USING fn;
			result := 'done';
			RETURN NEXT;
		END LOOP;
	END IF;
END;
$$;

COMMENT ON FUNCTION loyalty.citus_setup(boolean) IS
	'Citus coordinator, after CREATE EXTENSION loyalty: configuration tables become reference tables, per-customer tables are distributed by customer_id (colocated), owner tables of references by the reference; with distribute_functions, the per-customer API functions are distributed by customer_id (doc/citus.md)';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.citus_setup(boolean)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty._citus_not_distributable(rel regclass)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE
		WHEN NOT loyalty._citus_keyed_by(rel, 'customer_id') THEN
			'a primary key or unique index does not include customer_id'
		WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
						 WHERE a.attrelid = rel AND a.attname = 'customer_id'
						   AND a.atttypid = 'pg_catalog.text'::pg_catalog.regtype
						   AND a.attcollation = (SELECT c.oid FROM pg_catalog.pg_collation c
												 WHERE c.collname = 'C'
												   AND c.collnamespace = 'pg_catalog'::pg_catalog.regnamespace)) THEN
			'customer_id is not text COLLATE "C" (it could not be colocated)'
	END
$$;

COMMENT ON FUNCTION loyalty._citus_not_distributable(regclass) IS
	'Internal: why a per-customer table cannot be distributed by customer_id and colocated (NULL: it can)';

CREATE FUNCTION loyalty._citus_is_distributed(rel regclass)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	found boolean := false;
BEGIN
	IF pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
		RETURN false;
	END IF;
	EXECUTE 'SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1)'
		INTO found USING rel;
	RETURN found;
END;
$$;

COMMENT ON FUNCTION loyalty._citus_is_distributed(regclass) IS
	'Internal: whether Citus distributes this table (false without Citus)';

CREATE FUNCTION loyalty._citus_keyed_by(rel regclass, col name)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT NOT EXISTS (
		SELECT 1 FROM pg_catalog.pg_index i
		WHERE i.indrelid = rel AND i.indisunique
		  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
						  WHERE a.attrelid = rel AND a.attname = col
							AND a.attnum = ANY (i.indkey::smallint[])))
$$;

COMMENT ON FUNCTION loyalty._citus_keyed_by(regclass, name) IS
	'Internal: whether every unique index of the table includes the column (Citus can distribute it by that column)';

-- Issue 14: end of loyalty.citus_setup()

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

	-- a temporary table has no statistics until analysed (autovacuum never
	-- sees it): without them every statement below plans the stage as a
	-- handful of rows and joins it by nested loops, minutes at 100,000s
	ANALYZE pg_temp._loyalty_stage;

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
	/*
	 * Rows loaded by COPY are a restore (pg_restore, psql of a plain dump;
	 * no role but the owner can write this table): their events were queued
	 * when the changes happened and come back with loyalty.outbox's own
	 * rows.  Queuing them again would take ids from a sequence not restored
	 * yet and collide with those rows (pg_restore -j).
	 */
	IF pg_catalog.current_query() OPERATOR(pg_catalog.~*) '^\s*copy\s'::pg_catalog.text THEN
		RETURN NULL;
	END IF;
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

-- Issue 15, campaign KPIs, budgets and qualification (offer15): the lift
-- statistics (src/kpi/kpi_stats.sql), discount budgets and period caps on
-- coupon campaigns (src/coupon/coupon_budget.sql), loyalty.qualify.

/* ---------------------------------------------------------------------------
 * kpi_stats.sql: the statistics of campaign lift (kpi family)
 *
 * loyalty.lift_interval(outcome, treated, covariate): the difference of
 * the mean outcome of the treated group and of the control group (the
 * hold-out) with a 95% Welch t interval; with a pre-period covariate on
 * every row, CUPED-adjusted.  A parallel-safe aggregate (combine,
 * serialize, deserialize).  loyalty.t_quantile / t_cdf: Student's t
 * distribution for any positive degrees of freedom.  See
 * doc/campaign_kpi.md.
 * ------------------------------------------------------------------------ */

/* types */

CREATE TYPE loyalty.lift_estimate AS (
	n_treated		bigint,
	n_control		bigint,
	mean_treated	double precision,
	mean_control	double precision,
	difference		double precision,
	std_error		double precision,
	df				double precision,
	lower			double precision,
	upper			double precision,
	t_critical		double precision,
	theta			double precision
);

COMMENT ON TYPE loyalty.lift_estimate IS
	'Result of loyalty.lift_interval: treated minus control mean with a 95% Welch t interval (CUPED-adjusted means when theta is not null)';
COMMENT ON COLUMN loyalty.lift_estimate.n_treated IS 'Rows of the treated group';
COMMENT ON COLUMN loyalty.lift_estimate.n_control IS 'Rows of the control group (hold-out)';
COMMENT ON COLUMN loyalty.lift_estimate.mean_treated IS 'Mean outcome of the treated group (CUPED-adjusted when theta is set)';
COMMENT ON COLUMN loyalty.lift_estimate.mean_control IS 'Mean outcome of the control group (CUPED-adjusted when theta is set)';
COMMENT ON COLUMN loyalty.lift_estimate.difference IS 'mean_treated - mean_control: the estimated effect per member';
COMMENT ON COLUMN loyalty.lift_estimate.std_error IS 'Standard error of the difference (Welch: unequal variances); null with fewer than 2 rows in a group or no variance';
COMMENT ON COLUMN loyalty.lift_estimate.df IS 'Welch-Satterthwaite degrees of freedom';
COMMENT ON COLUMN loyalty.lift_estimate.lower IS 'Lower end of the 95% confidence interval of the difference';
COMMENT ON COLUMN loyalty.lift_estimate.upper IS 'Upper end of the 95% confidence interval of the difference';
COMMENT ON COLUMN loyalty.lift_estimate.t_critical IS 'The 0.975 quantile of Student''s t with df degrees of freedom';
COMMENT ON COLUMN loyalty.lift_estimate.theta IS 'CUPED coefficient cov(covariate, outcome) / var(covariate) over both groups; null without a covariate';

/* functions */

CREATE FUNCTION loyalty.t_quantile(p double precision, df double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'kpi_t_quantile'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.t_quantile(double precision, double precision) IS
	'The p-quantile of Student''s t distribution with df (> 0, any real, infinity = normal) degrees of freedom';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.t_quantile(double precision, double precision)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.t_cdf(t double precision, df double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'kpi_t_cdf'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.t_cdf(double precision, double precision) IS
	'P(T <= t) for Student''s t distribution with df (> 0, infinity = normal) degrees of freedom';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.t_cdf(double precision, double precision)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty._lift_trans(internal, double precision, boolean, double precision)
RETURNS internal
AS 'MODULE_PATHNAME', 'kpi_lift_transfn'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._lift_trans(internal, double precision, boolean, double precision) IS
	'Internal: transition function of loyalty.lift_interval';

CREATE FUNCTION loyalty._lift_combine(internal, internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'kpi_lift_combine'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._lift_combine(internal, internal) IS
	'Internal: combine function of loyalty.lift_interval (parallel aggregation)';

CREATE FUNCTION loyalty._lift_serial(internal)
RETURNS bytea
AS 'MODULE_PATHNAME', 'kpi_lift_serialize'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._lift_serial(internal) IS
	'Internal: serialize function of loyalty.lift_interval (parallel aggregation)';

CREATE FUNCTION loyalty._lift_deserial(bytea, internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'kpi_lift_deserialize'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._lift_deserial(bytea, internal) IS
	'Internal: deserialize function of loyalty.lift_interval (parallel aggregation)';

CREATE FUNCTION loyalty._lift_final(internal)
RETURNS loyalty.lift_estimate
AS 'MODULE_PATHNAME', 'kpi_lift_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._lift_final(internal) IS
	'Internal: final function of loyalty.lift_interval';

/* aggregates */

CREATE AGGREGATE loyalty.lift_interval(outcome double precision, treated boolean, covariate double precision) (
	SFUNC = loyalty._lift_trans,
	STYPE = internal,
	FINALFUNC = loyalty._lift_final,
	COMBINEFUNC = loyalty._lift_combine,
	SERIALFUNC = loyalty._lift_serial,
	DESERIALFUNC = loyalty._lift_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.lift_interval(double precision, boolean, double precision) IS
	'Treated minus control mean of outcome with a 95% Welch t interval; a covariate (pre-period value, on every row or on none) makes it CUPED-adjusted';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.lift_interval(double precision, boolean, double precision)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* ---------------------------------------------------------------------------
 * coupon_budget.sql: discount budgets and per-period redemption caps of
 * coupon campaigns (issue 15, item 6; doc/budgets.md)
 *
 * A campaign may have, besides its total and per-customer caps, a total
 * discount budget (money: the sum of the discounts of its active
 * redemptions, net of partial returns, plus those its live reservations
 * hold, never exceeds it) and a redemption cap per calendar period (day,
 * ISO week from Monday, or month, in the program time zone).  Both are kept
 * exact under concurrency like the total cap: counters in
 * loyalty.campaign_budget and loyalty.campaign_period_use, written only
 * under the lock of the campaign's budget row (lock order step 4b, after
 * the capped campaign row, before the customer lock; coupon_store.c).
 * redeem adds, rollback_redemption and coupon_return_lines give back.
 * ------------------------------------------------------------------------ */

/* tables */

CREATE TABLE loyalty.campaign_budget (
	campaign_id		bigint PRIMARY KEY,
	discount_budget	numeric,
	period			text,
	period_cap		bigint,
	discount_used	numeric NOT NULL DEFAULT 0,
	updated_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT campaign_budget_period_check
		CHECK ((period IS NULL) = (period_cap IS NULL)
			   AND (period IS NULL OR period IN ('day', 'week', 'month'))
			   AND (period_cap IS NULL OR period_cap >= 0)),
	CONSTRAINT campaign_budget_used_within
		CHECK (discount_used >= 0
			   AND (discount_budget IS NULL OR discount_used <= discount_budget))
);

COMMENT ON TABLE loyalty.campaign_budget IS
	'Discount budget and per-period redemption cap of a coupon campaign (write through loyalty.set_campaign_budget); a campaign without a row has neither';
COMMENT ON COLUMN loyalty.campaign_budget.discount_budget IS
	'Total discount the campaign may grant, in its currency (null: no money budget)';
COMMENT ON COLUMN loyalty.campaign_budget.period IS
	'day, week (ISO, from Monday) or month, in the program time zone; null: no period cap';
COMMENT ON COLUMN loyalty.campaign_budget.period_cap IS
	'Redemptions allowed per period (null: none)';
COMMENT ON COLUMN loyalty.campaign_budget.discount_used IS
	'Discount of the campaign''s active redemptions net of partial returns: maintained by redeem, rollback and returns under this row''s lock, recounted when the budget is set';

SELECT pg_catalog.pg_extension_config_dump('loyalty.campaign_budget', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.campaign_budget'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.campaign_period_use (
	campaign_id		bigint NOT NULL,
	period_start	date NOT NULL,
	uses			bigint NOT NULL DEFAULT 0,
	PRIMARY KEY (campaign_id, period_start)
);

COMMENT ON TABLE loyalty.campaign_period_use IS
	'Active redemptions of a campaign with a period cap, per period (first day of the day, ISO week or month in the program time zone); written under the lock of the campaign''s budget row';

SELECT pg_catalog.pg_extension_config_dump('loyalty.campaign_period_use', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.campaign_period_use'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/* functions */

/*
 * The first day of the period containing "at" in the program time zone
 * (loyalty.settings, no row: UTC): the day itself, the Monday of its ISO
 * week, or the first of its month.  Read at every call, so a change of the
 * zone applies at once (redemptions already counted stay in the period
 * they were counted in).
 */
CREATE FUNCTION loyalty._campaign_period_start(period text, at timestamptz)
RETURNS date
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT pg_catalog.date_trunc($1,
		pg_catalog.timezone(coalesce((SELECT s.timezone FROM loyalty.settings s), 'UTC'::pg_catalog.text), $2))::pg_catalog.date
$$;

COMMENT ON FUNCTION loyalty._campaign_period_start(text, timestamptz) IS
	'Internal: first day of the day / ISO week / month containing at, in the program time zone';

CREATE FUNCTION loyalty._campaign_budget_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'coupon_campaign_changed'
LANGUAGE C;

COMMENT ON FUNCTION loyalty._campaign_budget_changed() IS
	'Internal trigger: a campaign budget changed; invalidate the campaign caches of all backends';

-- every column but the counter discount_used, which redemptions update
CREATE TRIGGER campaign_budget_changed
	AFTER INSERT OR DELETE OR TRUNCATE ON loyalty.campaign_budget
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._campaign_budget_changed();
CREATE TRIGGER campaign_budget_config_changed
	AFTER UPDATE OF campaign_id, discount_budget, period, period_cap ON loyalty.campaign_budget
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._campaign_budget_changed();

/*
 * Set (or, with every argument null, remove) a campaign's discount budget
 * and period cap.  Behind the exclusive campaign gate, like update_campaign:
 * redemptions in flight finish first, later ones see the new limits.  The
 * counters are recounted from the ledger: discount_used from the active
 * redemptions net of returns, the current period's uses from the
 * redemptions made in it.  A budget below what is already granted is
 * refused.
 */
CREATE FUNCTION loyalty.set_campaign_budget(campaign_id bigint,
											discount_budget numeric DEFAULT NULL,
											period text DEFAULT NULL,
											period_cap bigint DEFAULT NULL)
RETURNS loyalty.campaign_budget
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cur text;
	decimals integer;
	used numeric;
	this_period date;
	res loyalty.campaign_budget;
BEGIN
	IF campaign_id IS NULL THEN
		RAISE EXCEPTION 'campaign_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF (period IS NULL) <> (period_cap IS NULL)
	   OR period NOT IN ('day', 'week', 'month') OR period_cap < 0 THEN
		RAISE EXCEPTION 'invalid campaign budget: a period cap needs period day, week or month and a period_cap of at least 0'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF discount_budget < 0 OR discount_budget >= 1e15 THEN
		RAISE EXCEPTION 'invalid campaign budget: discount_budget must lie in [0, 10^15)'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	PERFORM loyalty._campaign_gate(set_campaign_budget.campaign_id);
	SELECT c.currency INTO cur FROM loyalty.campaign c
	WHERE c.campaign_id = set_campaign_budget.campaign_id FOR NO KEY UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'campaign % does not exist', set_campaign_budget.campaign_id
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	decimals := loyalty.currency_decimals(cur);
	IF discount_budget OPERATOR(pg_catalog.<>) pg_catalog.trunc(discount_budget, decimals) THEN
		RAISE EXCEPTION 'invalid campaign budget: discount_budget % has more decimals than % allows',
			discount_budget, cur
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF discount_budget IS NULL AND period IS NULL THEN
		DELETE FROM loyalty.campaign_budget b WHERE b.campaign_id = set_campaign_budget.campaign_id;
		DELETE FROM loyalty.campaign_period_use p WHERE p.campaign_id = set_campaign_budget.campaign_id;
		RETURN NULL;
	END IF;

	SELECT coalesce(sum(r.discount), 0) INTO used FROM loyalty.redemption r
	WHERE r.campaign_id = set_campaign_budget.campaign_id;
	IF used > discount_budget THEN
		RAISE EXCEPTION 'invalid campaign budget: discount_budget % is below the % already granted',
			discount_budget, used
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	DELETE FROM loyalty.campaign_period_use p WHERE p.campaign_id = set_campaign_budget.campaign_id;
	IF period IS NOT NULL THEN
		this_period := loyalty._campaign_period_start(period, now());
		INSERT INTO loyalty.campaign_period_use (campaign_id, period_start, uses)
		SELECT set_campaign_budget.campaign_id, this_period, coalesce(sum(r.uses), 0)
		FROM loyalty.redemption r
		WHERE r.campaign_id = set_campaign_budget.campaign_id
		  AND (r.kind = 'redeem' AND loyalty._campaign_period_start(period, r.created_at) = this_period
			   OR r.kind = 'reversal' AND loyalty._campaign_period_start(period,
					(SELECT o.created_at FROM loyalty.redemption o WHERE o.redemption_id = r.reverses)) = this_period);
	END IF;
	INSERT INTO loyalty.campaign_budget AS b (campaign_id, discount_budget, period, period_cap, discount_used, updated_at)
	VALUES (set_campaign_budget.campaign_id, set_campaign_budget.discount_budget,
			set_campaign_budget.period, set_campaign_budget.period_cap, used, now())
	ON CONFLICT ON CONSTRAINT campaign_budget_pkey DO UPDATE
	SET discount_budget = excluded.discount_budget, period = excluded.period,
		period_cap = excluded.period_cap, discount_used = excluded.discount_used,
		updated_at = excluded.updated_at
	RETURNING * INTO res;
	RETURN res;
END;
$$;

COMMENT ON FUNCTION loyalty.set_campaign_budget(bigint, numeric, text, bigint) IS
	'Set a campaign''s discount budget and redemption cap per day / week / month (arguments by name; omitted = none; all omitted removes both); effective for every redemption that starts after the commit';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.set_campaign_budget(bigint, numeric, text, bigint)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* views */

CREATE VIEW loyalty.campaign_budget_status AS
SELECT b.campaign_id,
	   c.name,
	   c.currency,
	   b.discount_budget,
	   b.discount_used,
	   b.discount_budget - b.discount_used AS discount_left,
	   b.period,
	   b.period_cap,
	   p.period_start,
	   coalesce(u.uses, 0)::bigint AS period_uses,
	   CASE WHEN b.period_cap IS NOT NULL THEN pg_catalog.int8larger(b.period_cap - coalesce(u.uses, 0), 0) END AS period_left
FROM loyalty.campaign_budget b
JOIN loyalty.campaign c ON c.campaign_id = b.campaign_id
LEFT JOIN LATERAL (SELECT loyalty._campaign_period_start(b.period, pg_catalog.now()) AS period_start) p ON true
LEFT JOIN loyalty.campaign_period_use u
	   ON u.campaign_id = b.campaign_id AND u.period_start = p.period_start;

COMMENT ON VIEW loyalty.campaign_budget_status IS
	'Campaign budgets now: money granted and left, redemptions in the current period and left (live reservations not included)';
COMMENT ON COLUMN loyalty.campaign_budget_status.campaign_id IS 'The coupon campaign (loyalty.campaign)';
COMMENT ON COLUMN loyalty.campaign_budget_status.name IS 'Campaign name';
COMMENT ON COLUMN loyalty.campaign_budget_status.currency IS 'Currency of the budget (the campaign''s)';
COMMENT ON COLUMN loyalty.campaign_budget_status.discount_budget IS 'Total discount the campaign may grant (null: no money budget)';
COMMENT ON COLUMN loyalty.campaign_budget_status.discount_used IS 'Discount of active redemptions, net of partial returns';
COMMENT ON COLUMN loyalty.campaign_budget_status.discount_left IS 'discount_budget - discount_used (live reservations may hold part of it)';
COMMENT ON COLUMN loyalty.campaign_budget_status.period IS 'day, week or month (program time zone); null: no period cap';
COMMENT ON COLUMN loyalty.campaign_budget_status.period_cap IS 'Redemptions allowed per period';
COMMENT ON COLUMN loyalty.campaign_budget_status.period_start IS 'First day of the current period';
COMMENT ON COLUMN loyalty.campaign_budget_status.period_uses IS 'Active redemptions made in the current period';
COMMENT ON COLUMN loyalty.campaign_budget_status.period_left IS 'Redemptions left in the current period (live reservations may hold some)';

SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.campaign_budget_status'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/* ---------------------------------------------------------------------------
 * coupon_qualify.sql: what the coupon module gives loyalty.qualify (issue
 * 15, item 7; the function itself is in src/points/points_qualify.sql, as
 * it also lists points rewards)
 * ------------------------------------------------------------------------ */

/* indexes */

-- qualify lists a campaign's public (vanity) codes without reading the
-- millions of generated codes
CREATE INDEX coupon_public_idx ON loyalty.coupon (campaign_id)
	WHERE customer_id IS NULL AND loyalty.coupon_code_kind(code) = 'vanity';

COMMENT ON INDEX loyalty.coupon_public_idx IS
	'Public (vanity, unbound) codes by campaign: the public offers loyalty.qualify lists';

/* functions */

CREATE FUNCTION loyalty._validate_campaign(campaign_id bigint, customer_id text,
										   order_context jsonb, order_ref text,
										   OUT valid boolean, OUT reason text,
										   OUT discount numeric)
RETURNS record
AS 'MODULE_PATHNAME', 'coupon_validate_campaign'
LANGUAGE C STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty._validate_campaign(bigint, text, jsonb, text) IS
	'Internal: validate_coupon for a code of the campaign not issued yet (bound to the customer, single use): qualify''s points rewards';

/* ---------------------------------------------------------------------------
 * points_qualify.sql: loyalty.qualify (issue 15, item 7)
 *
 * Every offer a customer could use on a cart: the codes bound to the
 * customer (published by campaigns, "sorry" coupons, codes bought with
 * points), the public codes, and the points rewards (a coupon for points),
 * each with the discount it would give and, when it does not apply, the
 * reason.  Read-only.  Each code is checked by validate_coupon itself and
 * each reward by the same checks for a code not issued yet
 * (_validate_campaign), so qualify answers exactly what a redeem would
 * answer now.  Lives in the points family because it reads the rewards
 * and the balance.
 * ------------------------------------------------------------------------ */

/* functions */

CREATE FUNCTION loyalty.qualify(customer_id text, order_context jsonb, order_ref text DEFAULT NULL)
RETURNS TABLE (offer text, code text, campaign_id bigint, campaign text, applies boolean,
			   reason text, discount numeric, points bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	WITH live AS (
		SELECT c.campaign_id, c.name FROM loyalty.campaign c
		WHERE c.ends_at IS NULL OR c.ends_at OPERATOR(pg_catalog.>) pg_catalog.now()
	), cand AS (
		SELECT 'bound_code'::pg_catalog.text AS offer, k.code::pg_catalog.text AS code,
			   k.campaign_id, NULL::pg_catalog.int8 AS points
		FROM loyalty.coupon k
		WHERE k.customer_id OPERATOR(pg_catalog.=) $1 AND k.voided_at IS NULL
		  AND (k.max_uses IS NULL OR k.uses OPERATOR(pg_catalog.<) k.max_uses)
		UNION ALL
		SELECT 'public_code', k.code::pg_catalog.text, k.campaign_id, NULL
		FROM loyalty.coupon k
		WHERE k.customer_id IS NULL
		  AND loyalty.coupon_code_kind(k.code) OPERATOR(pg_catalog.=) 'vanity'
		  AND k.voided_at IS NULL
		  AND (k.max_uses IS NULL OR k.uses OPERATOR(pg_catalog.<) k.max_uses)
		UNION ALL
		SELECT 'points_reward', NULL, r.campaign_id, r.points
		FROM loyalty.points_reward r WHERE r.active
	), balance AS (
		SELECT b.available FROM loyalty.points_balance($1) b
	)
	SELECT cand.offer, cand.code, cand.campaign_id, live.name,
		   v.valid AND (cand.points IS NULL OR balance.available OPERATOR(pg_catalog.>=) cand.points),
		   CASE WHEN NOT v.valid OR v.reason IS NOT NULL THEN v.reason
				WHEN cand.points IS NOT NULL AND balance.available OPERATOR(pg_catalog.<) cand.points
				THEN 'insufficient_points' END,
		   v.discount, cand.points
	FROM cand
	JOIN live ON live.campaign_id OPERATOR(pg_catalog.=) cand.campaign_id
	CROSS JOIN balance
	CROSS JOIN LATERAL (
		SELECT x.valid, x.reason, x.discount
		FROM loyalty.validate_coupon(cand.code, $1, $2, $3) x WHERE cand.code IS NOT NULL
		UNION ALL
		SELECT x.valid, x.reason, x.discount
		FROM loyalty._validate_campaign(cand.campaign_id, $1, $2, $3) x WHERE cand.code IS NULL
	) v
	ORDER BY 5 DESC, 7 DESC NULLS LAST, 1, 2, 3
$$;

COMMENT ON FUNCTION loyalty.qualify(text, jsonb, text) IS
	'Every offer the customer could use on this cart (bound codes, public codes, points rewards) with the discount it would give, or why not; read-only; order_ref (by name) makes the order''s coupons count for stacking';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.qualify(text, jsonb, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* ---------------------------------------------------------------------------
 * kpi_campaign.sql: campaign KPIs per marketing campaign and variant
 * (issue 15, item 8; doc/campaign_kpi.md)
 *
 * The audience of a campaign is its experiment's assigned customers
 * (treated variants and hold-out alike), or without an experiment every
 * customer offered or filtered out.  Offers and filter reasons come from
 * the publication logs, redemptions and discount cost from the coupon
 * ledger, the revenue of redeemed orders from the coupon orders, and the
 * outcomes (orders and spend in the N days before and after each member's
 * offer) from the live RFM day buckets (loyalty.customer_stats.days): the
 * orders table is never scanned.  (jit and merge joins off: the planner's
 * row estimates of these joins of aggregated logs are far too high, so it
 * would compile the query (seconds) and sort every side for merge joins,
 * where hash joins take a third of the time; bench/campaign_kpi.bench.sh.)
 * Lift: incremental spend per member of
 * each treated variant against the hold-out, with a 95% Welch interval,
 * CUPED-adjusted by the pre-period spend (loyalty.lift_interval).
 * ------------------------------------------------------------------------ */

/* indexes: the KPIs read one campaign's rows of the campaign logs */

CREATE INDEX campaign_publication_campaign_idx ON loyalty.campaign_publication (marketing_campaign_id);
COMMENT ON INDEX loyalty.campaign_publication_campaign_idx IS
	'Publications of one marketing campaign (campaign KPIs)';
CREATE INDEX campaign_filtered_campaign_idx ON loyalty.campaign_filtered (marketing_campaign_id);
COMMENT ON INDEX loyalty.campaign_filtered_campaign_idx IS
	'Filtered-out customers of one marketing campaign (campaign KPIs, funnel)';
CREATE INDEX experiment_assignment_experiment_idx ON loyalty.experiment_assignment (experiment_id);
COMMENT ON INDEX loyalty.experiment_assignment_experiment_idx IS
	'Assignments of one experiment (campaign KPIs: audience per variant)';

/* functions */

CREATE FUNCTION loyalty.day_buckets_window(days loyalty.day_buckets, from_day date, to_day date,
										   OUT orders bigint, OUT spend numeric)
RETURNS record
AS 'MODULE_PATHNAME', 'kpi_day_buckets_window'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.day_buckets_window(loyalty.day_buckets, date, date) IS
	'Orders and exact spend of the days from_day..to_day (inclusive) of one customer''s live day buckets';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.day_buckets_window(loyalty.day_buckets, date, date)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty._kpi_windows(days loyalty.day_buckets, ref_day date, window_days integer)
RETURNS numeric[]
AS 'MODULE_PATHNAME', 'kpi_member_windows'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._kpi_windows(loyalty.day_buckets, date, integer) IS
	'Internal: {orders, spend} of the window_days days before ref_day and of the window_days days from it, from one customer''s day buckets (null buckets: zeros)';

/*
 * One row per member of a marketing campaign's audience with what the KPIs
 * aggregate.  ref_day: the day of the member's offer (assignment,
 * publication or filtering) in the program time zone; the outcome window
 * is ref_day .. ref_day + window_days - 1, the pre-period the window_days
 * days before.
 */
CREATE FUNCTION loyalty._campaign_members(marketing_campaign_id bigint, window_days integer)
RETURNS TABLE (customer_id text, variant text, holdout boolean, ref_day date, offered boolean,
			   filtered_reason text, redeemed boolean, redemptions bigint, discount numeric,
			   redeemed_revenue numeric, redeemed_margin numeric, windows numeric[])
LANGUAGE sql STABLE
AS $$
	WITH mc AS (
		SELECT m.marketing_campaign_id, m.experiment_id, m.coupon_campaign_id,
			   coalesce((SELECT s.timezone FROM loyalty.settings s), 'UTC'::pg_catalog.text) AS tz
		FROM loyalty.marketing_campaign m WHERE m.marketing_campaign_id OPERATOR(pg_catalog.=) $1
	), pub AS (
		SELECT p.customer_id, min(p.published_at) AS published_at
		FROM loyalty.campaign_publication p
		WHERE p.marketing_campaign_id OPERATOR(pg_catalog.=) $1
		GROUP BY p.customer_id
	), filt AS (
		SELECT DISTINCT ON (f.customer_id) f.customer_id, f.reason, f.variant, f.filtered_at
		FROM loyalty.campaign_filtered f
		WHERE f.marketing_campaign_id OPERATOR(pg_catalog.=) $1
		ORDER BY f.customer_id, f.filtered_at DESC
	), members AS (
		SELECT a.customer_id, a.variant, a.holdout, a.assigned_at AS ref_at
		FROM mc JOIN loyalty.experiment_assignment a ON a.experiment_id OPERATOR(pg_catalog.=) mc.experiment_id
		UNION ALL
		SELECT coalesce(pub.customer_id, filt.customer_id), NULL, false,
			   coalesce(pub.published_at, filt.filtered_at)
		FROM mc, pub FULL JOIN filt ON filt.customer_id OPERATOR(pg_catalog.=) pub.customer_id
		WHERE mc.experiment_id IS NULL
	), coupons AS (
		-- the coupon campaigns the campaign and its variants offer
		SELECT mc.coupon_campaign_id AS campaign_id FROM mc WHERE mc.coupon_campaign_id IS NOT NULL
		UNION
		SELECT v.coupon_campaign_id FROM mc JOIN loyalty.experiment_variant v
			ON v.experiment_id OPERATOR(pg_catalog.=) mc.experiment_id
		WHERE v.coupon_campaign_id IS NOT NULL
	), red AS (
		-- active redemptions of those campaigns by the audience, net of
		-- rollbacks and partial returns, with their orders
		SELECT r.customer_id, r.created_at, r.uses, r.discount, r.kind, o.amount,
			   coalesce((o.context OPERATOR(pg_catalog.->>) 'margin')::pg_catalog.numeric,
						o.amount OPERATOR(pg_catalog.-) (o.context OPERATOR(pg_catalog.->>) 'cost')::pg_catalog.numeric) AS margin
		FROM loyalty.redemption r
		JOIN loyalty.coupon_order o ON o.order_ref OPERATOR(pg_catalog.=) r.order_ref
		WHERE r.campaign_id IN (SELECT c.campaign_id FROM coupons c)
		  AND o.state OPERATOR(pg_catalog.<>) 'rolled_back'
	), red_by AS (
		SELECT red.customer_id, min(red.created_at) FILTER (WHERE red.kind OPERATOR(pg_catalog.=) 'redeem') AS first_at,
			   sum(red.uses) AS redemptions, sum(red.discount) AS discount,
			   sum(red.amount) FILTER (WHERE red.kind OPERATOR(pg_catalog.=) 'redeem') AS revenue,
			   sum(red.margin OPERATOR(pg_catalog.-) red.discount) FILTER (WHERE red.kind OPERATOR(pg_catalog.=) 'redeem') AS margin
		FROM red GROUP BY red.customer_id
	)
	SELECT m.customer_id::pg_catalog.text, m.variant, m.holdout, d.ref_day,
		   pub.customer_id IS NOT NULL,
		   CASE WHEN pub.customer_id IS NULL THEN filt.reason END,
		   coalesce(rb.redemptions OPERATOR(pg_catalog.>) 0 AND rb.first_at OPERATOR(pg_catalog.>=) pub.published_at, false),
		   coalesce(rb.redemptions, 0)::pg_catalog.int8, coalesce(rb.discount, 0),
		   coalesce(rb.revenue, 0), rb.margin,
		   loyalty._kpi_windows(s.days, d.ref_day, $2)
	FROM mc
	CROSS JOIN members m
	CROSS JOIN LATERAL (SELECT pg_catalog.timezone(mc.tz, m.ref_at)::pg_catalog.date AS ref_day) d
	LEFT JOIN pub ON pub.customer_id OPERATOR(pg_catalog.=) m.customer_id
	LEFT JOIN filt ON filt.customer_id OPERATOR(pg_catalog.=) m.customer_id
	LEFT JOIN red_by rb ON rb.customer_id OPERATOR(pg_catalog.=) m.customer_id AND pub.customer_id IS NOT NULL
	LEFT JOIN loyalty.customer_stats s ON s.customer_id OPERATOR(pg_catalog.=) m.customer_id
$$;

COMMENT ON FUNCTION loyalty._campaign_members(bigint, integer) IS
	'Internal (inlined into the KPI queries, so not SECURITY DEFINER): the audience of a marketing campaign, one row per member: variant, hold-out, offered or filtered (reason), redemptions, discount, revenue and margin of redeemed orders, {orders, spend} before and from the offer (live day buckets)';


CREATE FUNCTION loyalty.campaign_members(marketing_campaign_id bigint, window_days integer DEFAULT 30)
RETURNS TABLE (customer_id text, variant text, holdout boolean, ref_day date, offered boolean,
			   filtered_reason text, redeemed boolean, redemptions bigint, discount numeric,
			   redeemed_revenue numeric, redeemed_margin numeric,
			   orders_before bigint, spend_before numeric, orders_after bigint, spend_after numeric)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
SET enable_mergejoin = off
AS $$
	SELECT m.customer_id, m.variant, m.holdout, m.ref_day, m.offered, m.filtered_reason, m.redeemed,
		   m.redemptions, m.discount, m.redeemed_revenue, m.redeemed_margin,
		   m.windows[1]::pg_catalog.int8, m.windows[2], m.windows[3]::pg_catalog.int8, m.windows[4]
	FROM loyalty._campaign_members($1, $2) m
$$;

COMMENT ON FUNCTION loyalty.campaign_members(bigint, integer) IS
	'The audience of a marketing campaign, one row per member: variant, hold-out, offered or filtered (reason), redemptions, discount, revenue and margin of redeemed orders, orders and spend in the window_days before and from the offer (live day buckets)';

SELECT loyalty._register_function('analyst'::pg_catalog.text, 'loyalty.campaign_members(bigint, integer)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * The KPI report of one marketing campaign: one row per variant (one row
 * with variant NULL without an experiment).  Lift of a treated variant:
 * mean spend in the window per member minus the hold-out's, 95% Welch
 * interval, CUPED-adjusted by the pre-period spend when cuped.  ROI =
 * (incremental margin - discount cost) / discount cost, the incremental
 * margin being the incremental revenue times margin_rate (by name; default:
 * the margin share of the redeemed orders when they carry a cost or margin,
 * else none).
 */
CREATE FUNCTION loyalty.campaign_kpi(marketing_campaign_id bigint, window_days integer DEFAULT 30,
									 cuped boolean DEFAULT true, margin_rate numeric DEFAULT NULL)
RETURNS TABLE (variant text, holdout boolean, audience bigint, offered bigint, filtered bigint,
			   redeemed bigint, redemption_rate double precision, discount_cost numeric,
			   redeemed_revenue numeric, redeemed_margin numeric, repurchase_rate double precision,
			   avg_basket_before numeric, avg_basket_after numeric,
			   revenue_per_member double precision, incremental_revenue_per_member double precision,
			   lift_lower double precision, lift_upper double precision, lift_df double precision,
			   incremental_revenue double precision, roi double precision)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
SET enable_mergejoin = off
AS $$
BEGIN
	IF marketing_campaign_id IS NULL OR window_days IS NULL OR cuped IS NULL THEN
		RAISE EXCEPTION 'marketing_campaign_id, window_days and cuped must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF window_days NOT BETWEEN 1 AND 3660 THEN
		RAISE EXCEPTION 'window_days must lie between 1 and 3660'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF margin_rate < 0 OR margin_rate > 1 THEN
		RAISE EXCEPTION 'margin_rate must lie between 0 and 1'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM loyalty.marketing_campaign m
				   WHERE m.marketing_campaign_id = campaign_kpi.marketing_campaign_id) THEN
		RAISE EXCEPTION 'marketing campaign % does not exist', campaign_kpi.marketing_campaign_id
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	RETURN QUERY
	WITH m AS MATERIALIZED (
		SELECT x.variant, x.holdout, x.offered, x.filtered_reason, x.redeemed, x.discount,
			   x.redeemed_revenue, x.redeemed_margin, x.windows[1] AS orders_before,
			   x.windows[2] AS spend_before, x.windows[3] AS orders_after, x.windows[4] AS spend_after
		FROM loyalty._campaign_members(campaign_kpi.marketing_campaign_id, campaign_kpi.window_days) x
	), v AS (
		SELECT m.variant, bool_or(m.holdout) AS holdout, count(*) AS audience,
			   count(*) FILTER (WHERE m.offered) AS offered,
			   count(*) FILTER (WHERE m.filtered_reason IS NOT NULL) AS filtered,
			   count(*) FILTER (WHERE m.redeemed) AS redeemed,
			   sum(m.discount) AS discount_cost, sum(m.redeemed_revenue) AS revenue,
			   sum(m.redeemed_margin) AS margin,
			   count(*) FILTER (WHERE m.redeemed AND m.redeemed_margin IS NOT NULL) AS with_margin,
			   count(*) FILTER (WHERE m.orders_after > 0) AS repurchasers,
			   sum(m.spend_before) AS spend_before, sum(m.orders_before) AS orders_before,
			   sum(m.spend_after) AS spend_after, sum(m.orders_after) AS orders_after
		FROM m GROUP BY m.variant
	), lift AS (
		-- each treated variant against the hold-out, in one pass
		SELECT x.variant,
			   loyalty.lift_interval(x.spend_after::double precision, x.treated,
									 CASE WHEN campaign_kpi.cuped THEN x.spend_before::double precision END) AS e
		FROM (SELECT m.variant, true AS treated, m.spend_after, m.spend_before FROM m WHERE NOT m.holdout
			  UNION ALL
			  SELECT t.variant, false, m.spend_after, m.spend_before
			  FROM m CROSS JOIN (SELECT v.variant FROM v WHERE NOT v.holdout) t
			  WHERE m.holdout) x
		GROUP BY x.variant
	)
	SELECT v.variant, v.holdout, v.audience, v.offered, v.filtered, v.redeemed,
		   CASE WHEN v.offered > 0 THEN v.redeemed::double precision / v.offered END,
		   v.discount_cost, v.revenue,
		   CASE WHEN v.with_margin = v.redeemed AND v.redeemed > 0 THEN v.margin END,
		   v.repurchasers::double precision / v.audience,
		   CASE WHEN v.orders_before > 0 THEN round(v.spend_before / v.orders_before, 2) END,
		   CASE WHEN v.orders_after > 0 THEN round(v.spend_after / v.orders_after, 2) END,
		   (v.spend_after / v.audience)::double precision,
		   (l.e).difference, (l.e).lower, (l.e).upper, (l.e).df,
		   (l.e).difference * (l.e).n_treated,
		   CASE WHEN v.discount_cost > 0 AND (l.e).difference IS NOT NULL THEN
				((l.e).difference * (l.e).n_treated
				 * coalesce(campaign_kpi.margin_rate,
							CASE WHEN v.with_margin = v.redeemed AND v.revenue > 0
								 THEN (v.margin + v.discount_cost) / v.revenue END)::double precision
				 - v.discount_cost::double precision) / v.discount_cost::double precision END
	FROM v LEFT JOIN lift l ON l.variant IS NOT DISTINCT FROM v.variant
	ORDER BY v.holdout DESC, v.variant;
END;
$$;

COMMENT ON FUNCTION loyalty.campaign_kpi(bigint, integer, boolean, numeric) IS
	'KPI report of a marketing campaign per variant: audience, offered, filtered, redeemed, redemption rate, discount cost, revenue and margin of redeemed orders, repurchase rate and average basket before / after within window_days, incremental revenue per member vs the hold-out with a 95% Welch interval (CUPED on pre-period spend), ROI; optional arguments by name';

SELECT loyalty._register_function('analyst'::pg_catalog.text, 'loyalty.campaign_kpi(bigint, integer, boolean, numeric)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* views */

CREATE VIEW loyalty.campaign_funnel AS
SELECT m.marketing_campaign_id, m.name, s.variant, s.step, s.reason, s.customers
FROM loyalty.marketing_campaign m
CROSS JOIN LATERAL (
	SELECT p.variant, 'offered'::text AS step, NULL::text AS reason, count(*) AS customers
	FROM loyalty.campaign_publication p
	WHERE p.marketing_campaign_id = m.marketing_campaign_id
	GROUP BY p.variant
	UNION ALL
	SELECT f.variant, 'filtered', f.reason, count(*)
	FROM loyalty.campaign_filtered f
	WHERE f.marketing_campaign_id = m.marketing_campaign_id
	  AND NOT EXISTS (SELECT 1 FROM loyalty.campaign_publication p
					  WHERE p.customer_id = f.customer_id
						AND p.marketing_campaign_id = f.marketing_campaign_id
						AND p.occurrence = f.occurrence)
	GROUP BY f.variant, f.reason
) s;

COMMENT ON VIEW loyalty.campaign_funnel IS
	'The audience funnel of every marketing campaign: customers offered, and filtered out by reason (no_consent, frequency_cap, holdout, ...), per variant';
COMMENT ON COLUMN loyalty.campaign_funnel.marketing_campaign_id IS 'The marketing campaign';
COMMENT ON COLUMN loyalty.campaign_funnel.name IS 'Its name';
COMMENT ON COLUMN loyalty.campaign_funnel.variant IS 'Experiment variant (null: no experiment)';
COMMENT ON COLUMN loyalty.campaign_funnel.step IS 'offered, or filtered (never offered for that occurrence)';
COMMENT ON COLUMN loyalty.campaign_funnel.reason IS 'Why filtered out (null for offered)';
COMMENT ON COLUMN loyalty.campaign_funnel.customers IS 'Customers (per occurrence) at this step';

SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.campaign_funnel'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE VIEW loyalty.campaign_kpis AS
SELECT m.marketing_campaign_id, m.name, k.*
FROM loyalty.marketing_campaign m
CROSS JOIN LATERAL loyalty.campaign_kpi(m.marketing_campaign_id) k;

COMMENT ON VIEW loyalty.campaign_kpis IS
	'KPI report of every marketing campaign per variant with the defaults of loyalty.campaign_kpi (30-day window, CUPED, margin share of redeemed orders); filter on marketing_campaign_id';
COMMENT ON COLUMN loyalty.campaign_kpis.marketing_campaign_id IS 'The marketing campaign';
COMMENT ON COLUMN loyalty.campaign_kpis.name IS 'Its name';
COMMENT ON COLUMN loyalty.campaign_kpis.variant IS 'Experiment variant (null: no experiment)';
COMMENT ON COLUMN loyalty.campaign_kpis.holdout IS 'The hold-out (control) group: offered nothing';
COMMENT ON COLUMN loyalty.campaign_kpis.audience IS 'Members: assigned to the variant, or offered or filtered without an experiment';
COMMENT ON COLUMN loyalty.campaign_kpis.offered IS 'Members offered something';
COMMENT ON COLUMN loyalty.campaign_kpis.filtered IS 'Members filtered out and never offered (reasons: loyalty.campaign_funnel)';
COMMENT ON COLUMN loyalty.campaign_kpis.redeemed IS 'Offered members with an active redemption of the offered coupon campaign since the offer';
COMMENT ON COLUMN loyalty.campaign_kpis.redemption_rate IS 'redeemed / offered';
COMMENT ON COLUMN loyalty.campaign_kpis.discount_cost IS 'Discount granted to the members by the offered coupon campaigns, net of rollbacks and returns';
COMMENT ON COLUMN loyalty.campaign_kpis.redeemed_revenue IS 'Order amount of the redeemed orders';
COMMENT ON COLUMN loyalty.campaign_kpis.redeemed_margin IS 'Margin of the redeemed orders after discount (order context "margin", or amount - "cost"); null unless every redeemed order carries one';
COMMENT ON COLUMN loyalty.campaign_kpis.repurchase_rate IS 'Share of members with an order in the window from the offer';
COMMENT ON COLUMN loyalty.campaign_kpis.avg_basket_before IS 'Spend per order in the window before the offer';
COMMENT ON COLUMN loyalty.campaign_kpis.avg_basket_after IS 'Spend per order in the window from the offer';
COMMENT ON COLUMN loyalty.campaign_kpis.revenue_per_member IS 'Spend per member in the window from the offer';
COMMENT ON COLUMN loyalty.campaign_kpis.incremental_revenue_per_member IS 'Spend per member minus the hold-out''s (CUPED-adjusted); null for the hold-out and without one';
COMMENT ON COLUMN loyalty.campaign_kpis.lift_lower IS 'Lower end of the 95% Welch interval of incremental_revenue_per_member';
COMMENT ON COLUMN loyalty.campaign_kpis.lift_upper IS 'Upper end of the 95% Welch interval of incremental_revenue_per_member';
COMMENT ON COLUMN loyalty.campaign_kpis.lift_df IS 'Welch-Satterthwaite degrees of freedom of the interval';
COMMENT ON COLUMN loyalty.campaign_kpis.incremental_revenue IS 'incremental_revenue_per_member times the members of the variant';
COMMENT ON COLUMN loyalty.campaign_kpis.roi IS '(incremental margin - discount cost) / discount cost; null without a margin share';

SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.campaign_kpis'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

-- coupon_return_lines gives the campaigns' discount budgets back what a
-- partial return takes back
CREATE OR REPLACE FUNCTION loyalty.coupon_return_lines(customer_id text, order_ref text,
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
	WHERE t.customer_id = coupon_return_lines.customer_id
	  AND t.order_ref = coupon_return_lines.order_ref FOR NO KEY UPDATE;
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
		WHERE r.customer_id = coupon_return_lines.customer_id
		  AND r.order_ref = coupon_return_lines.order_ref AND r.kind = 'redeem'
		  AND r.line_discounts IS NOT NULL
		  AND NOT EXISTS (SELECT 1 FROM loyalty.redemption x
						  WHERE x.customer_id = r.customer_id AND x.reverses = r.redemption_id)
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
	-- the discount budgets of the campaigns get back what was taken back
	-- (lock order step 4b, coupon_store.c; doc/budgets.md)
	IF total > 0 THEN
		PERFORM 1 FROM loyalty.campaign_budget b
		WHERE b.campaign_id IN (SELECT r.campaign_id FROM loyalty.redemption r
								WHERE r.order_ref = coupon_return_lines.order_ref AND r.kind = 'redeem')
		ORDER BY b.campaign_id FOR NO KEY UPDATE;
		IF FOUND THEN
			UPDATE loyalty.campaign_budget b SET discount_used = b.discount_used - t.taken
			FROM (SELECT r.campaign_id, sum(rl.discount) AS taken
				  FROM loyalty.coupon_return_line rl
				  JOIN loyalty.redemption r
					ON r.order_ref = rl.order_ref AND r.coupon_id = rl.coupon_id AND r.kind = 'redeem'
				  WHERE rl.customer_id = coupon_return_lines.customer_id
					AND rl.order_ref = coupon_return_lines.order_ref
					AND rl.return_ref = coupon_return_lines.return_ref
				  GROUP BY r.campaign_id) t
			WHERE b.campaign_id = t.campaign_id;
		END IF;
	END IF;
	UPDATE loyalty.coupon_return r SET amount = total
	WHERE r.customer_id = coupon_return_lines.customer_id
	  AND r.order_ref = coupon_return_lines.order_ref AND r.return_ref = coupon_return_lines.return_ref;
	UPDATE loyalty.coupon_order t SET updated_at = now_ts
	WHERE t.customer_id = coupon_return_lines.customer_id AND t.order_ref = coupon_return_lines.order_ref;
	RETURN total;
END;
$$;

-- END issue 15 offer15

-- Issue 15, campaign publication (one-pass writer, bar: publish <= 1.5x an
-- INSERT ... SELECT of md5 codes): loyalty._publish_codes_direct (C,
-- campaign_publish.c) and loyalty._publish taking it for a bound-code
-- campaign without experiment, caps or quiet period.

CREATE FUNCTION loyalty._publish_codes_direct(marketing_campaign_id bigint, coupon_campaign_id bigint,
											  code_pattern text, channel text, as_of timestamptz,
											  customers text[], occurrences text[])
RETURNS bigint[]
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'campaign_publish_codes_direct';

COMMENT ON FUNCTION loyalty._publish_codes_direct(bigint, bigint, text, text, timestamptz, text[], text[]) IS
	'Internal: publish bound codes to an audience in one pass (occurrences NULL: all empty); returns {published, already_offered, no_consent}, NULL when the direct write does not apply; the caller holds the publication lock';

CREATE OR REPLACE FUNCTION loyalty._publish(marketing_campaign_id bigint, as_of timestamptz, keys text[], dry_run boolean)
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
	occurrences text[];
	counts bigint[];
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

	-- a code campaign with nothing to decide but consent: one pass in C
	-- (which sorts the audience and drops NULL and repeated keys itself),
	-- unless the tables are not as it needs them (NULL) or a generated
	-- code was taken (the statements below then regenerate in rounds)
	IF NOT dry_run AND m.offer_kind = 'code' AND m.experiment_id IS NULL AND m.quiet_period IS NULL
	   AND NOT EXISTS (SELECT 1 FROM loyalty.frequency_cap f WHERE f.channel IS NULL OR f.channel = m.channel)
	   AND EXISTS (SELECT 1 FROM loyalty.campaign k WHERE k.campaign_id = m.coupon_campaign_id
				   AND NOT k.paused AND (k.ends_at IS NULL OR k.ends_at > as_of)) THEN
		IF m.audience_kind <> 'query' THEN
			EXECUTE 'SELECT pg_catalog.array_agg(a.customer_id), pg_catalog.array_agg(a.occurrence) FROM ('
					|| loyalty._audience_sql(m.audience_kind) || ') AS a (customer_id, occurrence)'
			INTO keys, occurrences
			USING m.audience, as_of, NULL::text[], today;
		END IF;
		BEGIN
			counts := loyalty._publish_codes_direct(m.marketing_campaign_id, m.coupon_campaign_id,
													m.code_pattern, m.channel, as_of,
													coalesce(keys, '{}'::text[]), occurrences);
		EXCEPTION WHEN unique_violation THEN
			counts := NULL;
		END;
		IF counts IS NOT NULL THEN
			RETURN QUERY
				SELECT v.outcome, v.customers
				FROM (VALUES ('already_offered'::text, counts[2]), ('no_consent', counts[3]),
							 ('published', counts[1])) v (outcome, customers)
				WHERE v.customers > 0 ORDER BY 1;
			RETURN;
		END IF;
	END IF;

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

	-- a temporary table has no statistics until analysed (autovacuum never
	-- sees it): without them every statement below plans the stage as a
	-- handful of rows and joins it by nested loops, minutes at 100,000s
	ANALYZE pg_temp._loyalty_stage;

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

-- END issue 15, campaign publication (one-pass writer)

-- Issue 15, campaign KPIs (the KPI bar): loyalty.campaign_kpi computes the
-- per-variant totals and the moments of the lift in one pass over the
-- members (loyalty._lift_moments per variant, paired by
-- loyalty._lift_estimate) instead of materialising the members and scanning
-- them again for loyalty.lift_interval.  Same figures.

/* the moments of one group, paired afterwards (loyalty.campaign_kpi) */

CREATE FUNCTION loyalty._lift_moments_trans(internal, double precision, double precision)
RETURNS internal
AS 'MODULE_PATHNAME', 'kpi_lift_moments_transfn'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._lift_moments_trans(internal, double precision, double precision) IS
	'Internal: transition function of loyalty._lift_moments';

CREATE FUNCTION loyalty._lift_moments_final(internal)
RETURNS bytea
AS 'MODULE_PATHNAME', 'kpi_lift_moments_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._lift_moments_final(internal) IS
	'Internal: final function of loyalty._lift_moments (the moments as bytes)';

CREATE AGGREGATE loyalty._lift_moments(outcome double precision, covariate double precision) (
	SFUNC = loyalty._lift_moments_trans,
	STYPE = internal,
	FINALFUNC = loyalty._lift_moments_final,
	COMBINEFUNC = loyalty._lift_combine,
	SERIALFUNC = loyalty._lift_serial,
	DESERIALFUNC = loyalty._lift_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty._lift_moments(double precision, double precision) IS
	'Internal: count, means, second moments and co-moment of outcome and covariate of one group (Welford), as bytes for loyalty._lift_estimate: lets a query collect them per variant in the pass of its other aggregates';

CREATE FUNCTION loyalty._lift_estimate(treated bytea, controls bytea[])
RETURNS loyalty.lift_estimate
AS 'MODULE_PATHNAME', 'kpi_lift_from_moments'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._lift_estimate(bytea, bytea[]) IS
	'Internal: loyalty.lift_interval''s estimate from loyalty._lift_moments of the treated group and of the control groups (merged); null treated: null';

CREATE OR REPLACE FUNCTION loyalty.campaign_kpi(marketing_campaign_id bigint, window_days integer DEFAULT 30,
									 cuped boolean DEFAULT true, margin_rate numeric DEFAULT NULL)
RETURNS TABLE (variant text, holdout boolean, audience bigint, offered bigint, filtered bigint,
			   redeemed bigint, redemption_rate double precision, discount_cost numeric,
			   redeemed_revenue numeric, redeemed_margin numeric, repurchase_rate double precision,
			   avg_basket_before numeric, avg_basket_after numeric,
			   revenue_per_member double precision, incremental_revenue_per_member double precision,
			   lift_lower double precision, lift_upper double precision, lift_df double precision,
			   incremental_revenue double precision, roi double precision)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
SET enable_mergejoin = off
AS $$
BEGIN
	IF marketing_campaign_id IS NULL OR window_days IS NULL OR cuped IS NULL THEN
		RAISE EXCEPTION 'marketing_campaign_id, window_days and cuped must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF window_days NOT BETWEEN 1 AND 3660 THEN
		RAISE EXCEPTION 'window_days must lie between 1 and 3660'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF margin_rate < 0 OR margin_rate > 1 THEN
		RAISE EXCEPTION 'margin_rate must lie between 0 and 1'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM loyalty.marketing_campaign m
				   WHERE m.marketing_campaign_id = campaign_kpi.marketing_campaign_id) THEN
		RAISE EXCEPTION 'marketing campaign % does not exist', campaign_kpi.marketing_campaign_id
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	RETURN QUERY
	-- one pass over the members: the per-variant totals and the moments of
	-- the lift (treated rows and hold-out rows apart), paired afterwards
	WITH v AS (
		SELECT m.variant, bool_or(m.holdout) AS holdout, count(*) AS audience,
			   count(*) FILTER (WHERE m.offered) AS offered,
			   count(*) FILTER (WHERE m.filtered_reason IS NOT NULL) AS filtered,
			   count(*) FILTER (WHERE m.redeemed) AS redeemed,
			   sum(m.discount) AS discount_cost, sum(m.redeemed_revenue) AS revenue,
			   sum(m.redeemed_margin) AS margin,
			   count(*) FILTER (WHERE m.redeemed AND m.redeemed_margin IS NOT NULL) AS with_margin,
			   count(*) FILTER (WHERE m.orders_after > 0) AS repurchasers,
			   sum(m.spend_before) AS spend_before, sum(m.orders_before) AS orders_before,
			   sum(m.spend_after) AS spend_after, sum(m.orders_after) AS orders_after,
			   loyalty._lift_moments(m.spend_after::double precision,
									 CASE WHEN campaign_kpi.cuped THEN m.spend_before::double precision END)
				   FILTER (WHERE NOT m.holdout) AS treated_moments,
			   loyalty._lift_moments(m.spend_after::double precision,
									 CASE WHEN campaign_kpi.cuped THEN m.spend_before::double precision END)
				   FILTER (WHERE m.holdout) AS control_moments
		FROM (SELECT x.variant, x.holdout, x.offered, x.filtered_reason, x.redeemed, x.discount,
					 x.redeemed_revenue, x.redeemed_margin, x.windows[1] AS orders_before,
					 x.windows[2] AS spend_before, x.windows[3] AS orders_after, x.windows[4] AS spend_after
			  FROM loyalty._campaign_members(campaign_kpi.marketing_campaign_id, campaign_kpi.window_days) x) m
		GROUP BY m.variant
	), lift AS (
		-- each treated variant against the hold-out, from the moments above
		SELECT v.variant, loyalty._lift_estimate(v.treated_moments, c.controls) AS e
		FROM v CROSS JOIN (SELECT array_agg(h.control_moments) AS controls FROM v h) c
		WHERE NOT v.holdout
	)
	SELECT v.variant, v.holdout, v.audience, v.offered, v.filtered, v.redeemed,
		   CASE WHEN v.offered > 0 THEN v.redeemed::double precision / v.offered END,
		   v.discount_cost, v.revenue,
		   CASE WHEN v.with_margin = v.redeemed AND v.redeemed > 0 THEN v.margin END,
		   v.repurchasers::double precision / v.audience,
		   CASE WHEN v.orders_before > 0 THEN round(v.spend_before / v.orders_before, 2) END,
		   CASE WHEN v.orders_after > 0 THEN round(v.spend_after / v.orders_after, 2) END,
		   (v.spend_after / v.audience)::double precision,
		   (l.e).difference, (l.e).lower, (l.e).upper, (l.e).df,
		   (l.e).difference * (l.e).n_treated,
		   CASE WHEN v.discount_cost > 0 AND (l.e).difference IS NOT NULL THEN
				((l.e).difference * (l.e).n_treated
				 * coalesce(campaign_kpi.margin_rate,
							CASE WHEN v.with_margin = v.redeemed AND v.revenue > 0
								 THEN (v.margin + v.discount_cost) / v.revenue END)::double precision
				 - v.discount_cost::double precision) / v.discount_cost::double precision END
	FROM v LEFT JOIN lift l ON l.variant IS NOT DISTINCT FROM v.variant
	ORDER BY v.holdout DESC, v.variant;
END;
$$;

-- END issue 15, campaign KPIs (the KPI bar)

-- Issue 14, Citus (newer families): citus_setup also distributes the
-- campaign, referral and mission per-customer tables (colocated with
-- customer_stats), makes their configuration tables and clv_model reference
-- tables and distributes referral_code_key by code and referral_claim by
-- digest; the outbox's NOTIFY trigger does nothing on a shard placement; the
-- statements Citus could not plan (mixing distributed tables with tables on
-- the coordinator in one statement, a function reading a table inside a
-- statement on a distributed table, parameters of an SQL function) are
-- split or moved to PL/pgSQL; outbox_claim locks event by event on a
-- distributed outbox; campaign_kpi refuses distributed campaign
-- tables (0A000) instead of reporting no audience (doc/citus.md).  Same
-- results on one node.

CREATE OR REPLACE FUNCTION loyalty.citus_setup(distribute_functions boolean DEFAULT false)
RETURNS TABLE (object text, action text, result text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	ref_tables text[] := ARRAY['settings', 'tracked_table', 'rfm_config', 'segment_snapshot',
		'segment_summary', 'campaign', 'campaign_rule',
		'eligibility_kind', 'coupon', 'points_program', 'tier', 'earning_rule',
		'points_reward', 'clv_model', 'experiment', 'experiment_variant',
		'marketing_campaign', 'frequency_cap', 'referral_program', 'referral_reward_tier',
		'mission', 'mission_order_source'];
	customer_tables text[] := ARRAY['customer_stats', 'customer_stats_delta',
		'segment_change', 'coupon_order', 'redemption', 'reservation', 'coupon_return',
		'coupon_return_line', 'points_account', 'points_lot', 'points_ledger',
		'points_qualifying', 'points_rule_usage', 'tier_history', 'points_exchange',
		'coupon_bonus', 'campaign_publication', 'campaign_filtered',
		'experiment_assignment', 'consent', 'consent_history', 'customer_dates', 'cart',
		'outbox', 'referral_code', 'referral', 'referral_period', 'mission_optin',
		'mission_customer', 'mission_attempt', 'mission_contribution', 'mission_order_delta',
		'referral_coupon'];
	points_config text[] := ARRAY['points_program', 'tier', 'earning_rule', 'points_reward'];
	-- their triggers read and write the whole segment map by the tables'
	-- names: on a placement that is a distributed query inside Citus's copy
	-- (it deadlocks); not reference tables yet
	local_tables text[] := ARRAY['segment', 'segment_rule'];
	-- global keys: a reference, a referral code, an identifier's digest
	owner_tables text[] := ARRAY['coupon_order_owner:order_ref', 'points_reference:reference',
		'referral_code_key:code', 'referral_claim:digest'];
	functions text[] := ARRAY['coupon_validate', 'coupon_reserve', 'coupon_redeem',
		'coupon_rollback', 'coupon_release', 'coupon_order_lines', 'coupon_return_lines',
		'coupon_update_order', 'customer_rfm'];
	t text;
	rel regclass;
	col text;
	fn regprocedure;
	points_ok boolean := true;	-- every points table can be distributed
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus') THEN
		RAISE EXCEPTION 'citus_setup needs the citus extension'
			USING ERRCODE = 'feature_not_supported',
				  DETAIL = 'CREATE EXTENSION citus on the coordinator (shared_preload_libraries = ''citus''), add the workers, then run loyalty.citus_setup().';
	END IF;
	PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
	-- the points family moves as a whole: one statement of a points call
	-- may not mix tables on the coordinator with distributed or reference ones
	points_ok := NOT EXISTS (
		SELECT 1 FROM unnest(customer_tables) AS x(t)
		WHERE (x.t LIKE 'points%' OR x.t IN ('tier_history', 'coupon_bonus'))
		  AND pg_catalog.to_regclass('loyalty.' || x.t) IS NOT NULL
		  AND NOT loyalty._citus_is_distributed(pg_catalog.to_regclass('loyalty.' || x.t))
		  AND loyalty._citus_not_distributable(pg_catalog.to_regclass('loyalty.' || x.t)) IS NOT NULL);

	FOREACH t IN ARRAY ref_tables LOOP
		rel := pg_catalog.to_regclass('loyalty.' || t);
		CONTINUE WHEN rel IS NULL;
		object := rel::text;
		action := 'reference table';
		IF loyalty._citus_is_distributed(rel) THEN
			result := 'already';
		ELSIF t = ANY (points_config) AND NOT points_ok THEN
			result := 'not done: a points table cannot be distributed; the points tables stay on the coordinator together';
		ELSE
			-- the coordinator's own rows of a configuration table (a few)
			-- stay on disk, invisible: rfm_config refuses TRUNCATE
			EXECUTE 'SELECT pg_catalog.create_reference_table($1)' USING rel;
			result := 'done';
		END IF;
		RETURN NEXT;
	END LOOP;

	FOREACH t IN ARRAY local_tables LOOP
		rel := pg_catalog.to_regclass('loyalty.' || t);
		CONTINUE WHEN rel IS NULL OR loyalty._citus_is_distributed(rel);
		object := rel::text;
		action := 'reference table';
		result := 'not done: its triggers read the table by name, which deadlocks in Citus''s copy; it stays on the coordinator';
		RETURN NEXT;
	END LOOP;

	FOREACH t IN ARRAY customer_tables LOOP
		rel := pg_catalog.to_regclass('loyalty.' || t);
		CONTINUE WHEN rel IS NULL;
		object := rel::text;
		action := 'distributed by customer_id, colocated with loyalty.customer_stats';
		result := NULL;
		IF loyalty._citus_is_distributed(rel) THEN
			result := 'already';
		ELSIF loyalty._citus_not_distributable(rel) IS NOT NULL THEN
			result := 'not done: ' || loyalty._citus_not_distributable(rel);
		ELSIF (t LIKE 'points%' OR t IN ('tier_history', 'coupon_bonus')) AND NOT points_ok THEN
			result := 'not done: another points table cannot be distributed; the points tables stay on the coordinator together';
		END IF;
		IF result IS NULL THEN
			EXECUTE 'SELECT pg_catalog.create_distributed_table($1, $2, colocate_with => $3)'
				USING rel, 'customer_id'::text,
					  CASE WHEN t = 'customer_stats' THEN 'default' ELSE 'loyalty.customer_stats' END;
			EXECUTE 'SELECT pg_catalog.truncate_local_data_after_distributing_table($1)' USING rel;
			result := 'done';
		END IF;
		RETURN NEXT;
	END LOOP;

	FOREACH t IN ARRAY owner_tables LOOP
		rel := pg_catalog.to_regclass('loyalty.' || split_part(t, ':', 1));
		CONTINUE WHEN rel IS NULL;
		col := split_part(t, ':', 2);
		object := rel::text;
		action := format('distributed by %s in its own colocation group', col);
		IF loyalty._citus_is_distributed(rel) THEN
			result := 'already';
		ELSIF rel = 'loyalty.points_reference'::regclass AND NOT points_ok THEN
			-- one statement of a points call may not mix it with local tables
			result := 'not done: a points table cannot be distributed; the points tables stay on the coordinator together';
		ELSE
			EXECUTE 'SELECT pg_catalog.create_distributed_table($1, $2, colocate_with => ''none'')'
				USING rel, col;
			EXECUTE 'SELECT pg_catalog.truncate_local_data_after_distributing_table($1)' USING rel;
			result := 'done';
		END IF;
		RETURN NEXT;
	END LOOP;

	IF distribute_functions THEN
		FOR fn IN
			SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
			WHERE p.pronamespace = 'loyalty'::regnamespace AND p.proname = ANY (functions)
			  AND p.proargnames[1] = 'customer_id'
			ORDER BY 1
		LOOP
			object := fn::text;
			action := 'function distributed by customer_id';
			EXECUTE 'SELECT pg_catalog.create_distributed_function($1, ''customer_id'', colocate_with => ''loyalty.customer_stats'')'
				USING fn;
			result := 'done';
			RETURN NEXT;
		END LOOP;
	END IF;
END;
$$;

CREATE OR REPLACE FUNCTION loyalty._outbox_notify()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	/*
	 * Not on a Citus shard placement (outbox_102008: the table is
	 * distributed): a NOTIFY there makes the worker's part of the
	 * distributed transaction impossible to PREPARE, and nobody listens
	 * on a worker.  On Citus consumers poll (doc/citus.md).
	 */
	IF TG_TABLE_NAME OPERATOR(pg_catalog.<>) 'outbox'::pg_catalog.name THEN
		RETURN NULL;
	END IF;
	PERFORM pg_catalog.pg_notify('loyalty_outbox'::pg_catalog.text, ''::pg_catalog.text);
	RETURN NULL;
END;
$$;

COMMENT ON FUNCTION loyalty._outbox_notify() IS
	'Internal trigger: NOTIFY loyalty_outbox (delivered at commit) when events were queued; nothing on a Citus shard placement';

CREATE OR REPLACE FUNCTION loyalty.outbox_claim(batch_size integer DEFAULT 100)
RETURNS SETOF loyalty.outbox
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cand record;
	claimed integer := 0;
BEGIN
	IF batch_size IS NULL OR batch_size < 1 THEN
		RAISE EXCEPTION 'batch_size must be at least 1' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF NOT loyalty._citus_is_distributed('loyalty.outbox'::pg_catalog.regclass) THEN
		RETURN QUERY
			SELECT o.* FROM loyalty.outbox o
			WHERE o.acked_at IS NULL
			ORDER BY o.outbox_id
			LIMIT batch_size
			FOR UPDATE SKIP LOCKED;
		RETURN;
	END IF;
	/*
	 * Citus (the outbox distributed by customer) locks rows only in a
	 * single-shard statement: the oldest pending events are read without
	 * a lock, then each is locked by its key, SKIP LOCKED, until the batch
	 * is full.  Candidates are read four times the batch (plus 100) ahead:
	 * events claimed by other consumers beyond that wait for the next call.
	 */
	FOR cand IN
		SELECT o.customer_id, o.outbox_id FROM loyalty.outbox o
		WHERE o.acked_at IS NULL
		ORDER BY o.outbox_id
		LIMIT batch_size * 4 + 100
	LOOP
		RETURN QUERY
			SELECT o.* FROM loyalty.outbox o
			WHERE o.customer_id = cand.customer_id AND o.outbox_id = cand.outbox_id
			  AND o.acked_at IS NULL
			FOR UPDATE SKIP LOCKED;
		IF FOUND THEN
			claimed := claimed + 1;
			EXIT WHEN claimed >= batch_size;
		END IF;
	END LOOP;
END;
$$;

COMMENT ON FUNCTION loyalty.outbox_claim(integer) IS
	'Claim up to batch_size pending outbox events, oldest first, locked until the end of the transaction (FOR UPDATE SKIP LOCKED: concurrent consumers get disjoint batches; on Citus locked one by one); acknowledge them with outbox_ack in the same transaction';

CREATE OR REPLACE FUNCTION loyalty._referral_orders(customer_id text)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	tracked bigint;
	pending bigint;
	earned bigint;
BEGIN
	-- one table per statement: on Citus the statistics are distributed and
	-- a statement may not mix them with tables kept on the coordinator
	SELECT s.order_count INTO tracked FROM loyalty.customer_stats s
	WHERE s.customer_id OPERATOR(pg_catalog.=) _referral_orders.customer_id;
	SELECT pg_catalog.sum(d.order_count)::bigint INTO pending FROM loyalty.customer_stats_delta d
	WHERE d.customer_id OPERATOR(pg_catalog.=) _referral_orders.customer_id;
	SELECT pg_catalog.count(*) INTO earned FROM loyalty.points_ledger e
	WHERE e.customer_id OPERATOR(pg_catalog.=) _referral_orders.customer_id
	  AND e.kind OPERATOR(pg_catalog.=) 'earn' AND e.amount IS NOT NULL;
	RETURN GREATEST(COALESCE(tracked, 0::bigint) OPERATOR(pg_catalog.+) COALESCE(pending, 0::bigint),
					earned);
END;
$$;

CREATE OR REPLACE FUNCTION loyalty.referral_join(customer_id text, reference text, code text,
									  at timestamptz DEFAULT pg_catalog.now(),
									  email text DEFAULT NULL, phone text DEFAULT NULL,
									  device_hash text DEFAULT NULL, payment_hash text DEFAULT NULL,
									  OUT program text, OUT referrer_id text, OUT status text, OUT joined_at timestamptz)
RETURNS record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	p_customer text := customer_id;
	p_reference text := reference;
	p_code loyalty.coupon_code;
	bad text;
	owner loyalty.referral_code_key;
	prog loyalty.referral_program;
	ref loyalty.referral;
	rc loyalty.referral_code;
	standing text;
	in_period integer;
	claim record;
	zone text;
BEGIN
	IF p_customer IS NULL OR p_reference IS NULL OR code IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, reference, code and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, p_customer);
	PERFORM loyalty._points_check_key('reference'::text, p_reference);
	IF at > pg_catalog.now() + '5 minutes'::interval THEN
		RAISE EXCEPTION 'at must not lie in the future'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'A business time may be at most 5 minutes ahead of the server clock.';
	END IF;

	bad := loyalty.coupon_code_check(code);
	IF bad IS NULL THEN
		p_code := code::loyalty.coupon_code;
		SELECT k.* INTO owner FROM loyalty.referral_code_key k WHERE k.code OPERATOR(loyalty.=) p_code;
	END IF;
	IF bad IS NOT NULL OR owner.code IS NULL THEN
		RAISE EXCEPTION 'unknown referral code "%"', code
			USING ERRCODE = 'LR001',
				  DETAIL = pg_catalog.json_build_object('reason', 'unknown_code', 'code', code,
								  'check', COALESCE(bad, 'not_found'))::text,
				  HINT = 'Check the code for typos.';
	END IF;

	-- a repeat returns the first join, whatever changed since
	SELECT r.* INTO ref FROM loyalty.referral r WHERE r.customer_id = p_customer;
	IF FOUND THEN
		IF ref.reference = p_reference AND ref.code OPERATOR(loyalty.=) p_code THEN
			program := ref.program; referrer_id := ref.referrer_id; status := ref.status; joined_at := ref.joined_at;
			RETURN;
		END IF;
		RAISE EXCEPTION 'customer "%" was already referred', p_customer
			USING ERRCODE = 'LR004',
				  DETAIL = pg_catalog.json_build_object('reason', 'already_referred', 'program', ref.program,
								  'same_referrer', ref.referrer_id = owner.customer_id)::text,
				  HINT = 'A customer can join a referral program once.';
	END IF;

	prog := loyalty._referral_program(owner.program);
	IF owner.customer_id = p_customer THEN
		RAISE EXCEPTION 'customer "%" cannot use their own referral code', p_customer
			USING ERRCODE = 'LR003',
				  DETAIL = pg_catalog.json_build_object('reason', 'self_referral', 'by', 'customer_id')::text;
	END IF;
	IF prog.new_customers_only AND loyalty._referral_orders(p_customer) > 0 THEN
		RAISE EXCEPTION 'customer "%" is not a new customer', p_customer
			USING ERRCODE = 'LR005',
				  DETAIL = pg_catalog.json_build_object('reason', 'not_new_customer', 'program', prog.program)::text,
				  HINT = 'Only customers without orders can join with a referral code.';
	END IF;
	standing := loyalty._referral_standing(owner.customer_id, prog);
	IF standing IS NOT NULL THEN
		RAISE EXCEPTION 'the referrer of code "%" is not in good standing', code
			USING ERRCODE = 'LR006',
				  DETAIL = pg_catalog.json_build_object('reason', 'referrer_not_in_good_standing', 'program', prog.program,
								  'rule', standing)::text;
	END IF;
	SELECT c.* INTO STRICT rc FROM loyalty.referral_code c
	WHERE c.customer_id = owner.customer_id AND c.program = prog.program;
	IF prog.cap_lifetime IS NOT NULL AND rc.converted >= prog.cap_lifetime THEN
		RAISE EXCEPTION 'the referrer of code "%" reached the referral cap', code
			USING ERRCODE = 'LR007',
				  DETAIL = pg_catalog.json_build_object('reason', 'referrer_cap_reached', 'program', prog.program,
								  'cap', 'lifetime', 'limit', prog.cap_lifetime, 'converted', rc.converted)::text;
	END IF;
	IF prog.cap_per_period IS NOT NULL THEN
		-- the zone first: on Citus a function reading a table may not run
		-- inside a statement on a distributed table
		zone := loyalty._referral_zone();
		SELECT p.converted INTO in_period FROM loyalty.referral_period p
		WHERE p.customer_id = owner.customer_id AND p.program = prog.program
		  AND p.period_start = pg_catalog.date_trunc(prog.cap_period, pg_catalog.timezone(zone, at))::date;
		IF COALESCE(in_period, 0) >= prog.cap_per_period THEN
			RAISE EXCEPTION 'the referrer of code "%" reached the referral cap', code
				USING ERRCODE = 'LR007',
					  DETAIL = pg_catalog.json_build_object('reason', 'referrer_cap_reached', 'program', prog.program,
									  'cap', 'period', 'limit', prog.cap_per_period, 'converted', in_period)::text;
		END IF;
	END IF;

	INSERT INTO loyalty.referral AS r (customer_id, reference, program, referrer_id, code, joined_at)
	VALUES (p_customer, p_reference, prog.program, owner.customer_id, owner.code, at)
	ON CONFLICT ON CONSTRAINT referral_pkey DO NOTHING;
	IF NOT FOUND THEN
		-- a concurrent join of this referee committed first
		SELECT r.* INTO ref FROM loyalty.referral r WHERE r.customer_id = p_customer;
		IF NOT FOUND THEN
			RAISE EXCEPTION 'could not serialize access due to a concurrent join'
				USING ERRCODE = 'serialization_failure',
					  DETAIL = 'Another transaction joined this customer after this transaction''s snapshot.';
		END IF;
		IF ref.reference = p_reference AND ref.code OPERATOR(loyalty.=) p_code THEN
			program := ref.program; referrer_id := ref.referrer_id; status := ref.status; joined_at := ref.joined_at;
			RETURN;
		END IF;
		RAISE EXCEPTION 'customer "%" was already referred', p_customer
			USING ERRCODE = 'LR004',
				  DETAIL = pg_catalog.json_build_object('reason', 'already_referred', 'program', ref.program,
								  'same_referrer', ref.referrer_id = owner.customer_id)::text,
				  HINT = 'A customer can join a referral program once.';
	END IF;

	claim := loyalty._referral_claim(p_customer, email, phone, device_hash, payment_hash);
	IF claim.owner = owner.customer_id THEN
		RAISE EXCEPTION 'customer "%" cannot use their own referral code', p_customer
			USING ERRCODE = 'LR003',
				  DETAIL = pg_catalog.json_build_object('reason', 'self_referral', 'by', claim.kind)::text;
	ELSIF claim.owner IS NOT NULL THEN
		RAISE EXCEPTION 'the % given is already used by another customer', claim.kind
			USING ERRCODE = 'LR008',
				  DETAIL = pg_catalog.json_build_object('reason', 'identifier_reused', 'kind', claim.kind)::text;
	END IF;

	program := prog.program; referrer_id := owner.customer_id; status := 'joined'; joined_at := at;
END;
$$;

CREATE OR REPLACE FUNCTION loyalty.referral_refund(customer_id text, order_ref text,
										at timestamptz DEFAULT pg_catalog.now(),
										OUT status text, OUT referrer_id text,
										OUT referrer_points bigint, OUT referee_points bigint)
RETURNS record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	p_customer text := customer_id;
	ref loyalty.referral;
	period date;
	side record;
	zone text;
BEGIN
	IF p_customer IS NULL OR order_ref IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, order_ref and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, p_customer);
	PERFORM loyalty._points_check_key('order_ref'::text, order_ref);

	SELECT r.* INTO ref FROM loyalty.referral r WHERE r.customer_id = p_customer FOR UPDATE;
	IF NOT FOUND THEN
		status := 'not_referred';
		RETURN;
	END IF;
	referrer_id := ref.referrer_id;
	referrer_points := ref.referrer_points; referee_points := ref.referee_points;
	IF ref.order_ref IS DISTINCT FROM order_ref OR ref.status NOT IN ('converted', 'revoked') THEN
		status := 'not_qualifying_order';
		referrer_points := NULL; referee_points := NULL;
		RETURN;
	END IF;
	status := 'revoked';
	IF ref.status = 'revoked' THEN
		RETURN;
	END IF;

	PERFORM 1 FROM loyalty.referral_code c
	WHERE c.customer_id = ref.referrer_id AND c.program = ref.program FOR UPDATE;
	UPDATE loyalty.referral_code c SET converted = c.converted - 1
	WHERE c.customer_id = ref.referrer_id AND c.program = ref.program;
	zone := loyalty._referral_zone();
	SELECT pg_catalog.date_trunc(p.cap_period, pg_catalog.timezone(zone, ref.converted_at))::date
	INTO period FROM loyalty.referral_program p WHERE p.program = ref.program;
	UPDATE loyalty.referral_period p SET converted = p.converted - 1
	WHERE p.customer_id = ref.referrer_id AND p.program = ref.program AND p.period_start = period;
	UPDATE loyalty.referral r SET status = 'revoked', revoked_at = at WHERE r.customer_id = p_customer;

	FOR side IN SELECT * FROM (VALUES (p_customer, 'referee'::text, ref.referee_points),
									  (ref.referrer_id, 'referrer'::text, ref.referrer_points)) AS s(who, role, pts)
				WHERE s.pts > 0 ORDER BY s.who COLLATE "C"
	LOOP
		PERFORM loyalty.points_reverse(side.who, loyalty._referral_reference(p_customer, side.role), at => at);
	END LOOP;
END;
$$;

CREATE OR REPLACE FUNCTION loyalty.mission_progress(customer_id text, at timestamptz DEFAULT pg_catalog.now())
RETURNS TABLE (mission_id text, description text, attempt integer, progress numeric, target numeric,
			   status text, ends_at timestamptz, days_left integer, message text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
	-- PL/pgSQL, not SQL: Citus plans a query with parameters of an SQL
	-- function on distributed tables only in PL/pgSQL
	RETURN QUERY
	SELECT m.mission_id, m.description, a.attempt,
		   COALESCE(p.progress, 0), m.target, COALESCE(p.status, 'not_started'),
		   p.ends_at,
		   CASE WHEN p.ends_at IS NOT NULL
				THEN GREATEST(0, pg_catalog.ceil(pg_catalog.date_part('epoch', p.ends_at - $2) / 86400)::integer) END,
		   pg_catalog.format('%s of %s %s%s',
				  COALESCE(p.progress, 0)::text, m.target::text,
				  CASE m.kind WHEN 'orders' THEN 'orders' WHEN 'spend' THEN 'spent'
							  WHEN 'streak' THEN 'months in a row' ELSE m.event || 's' END,
				  CASE WHEN p.status = 'completed' THEN ', completed'
					   WHEN p.ends_at IS NOT NULL
					   THEN pg_catalog.format(', %s days left',
							   GREATEST(0, pg_catalog.ceil(pg_catalog.date_part('epoch', p.ends_at - $2) / 86400)::integer))
					   ELSE '' END)
	FROM loyalty.mission m
	LEFT JOIN LATERAL (SELECT x.* FROM loyalty.mission_attempt x
					   WHERE x.customer_id = $1 AND x.mission_id = m.mission_id
					   ORDER BY x.attempt DESC LIMIT 1) a ON true
	LEFT JOIN LATERAL (SELECT a.progress, a.ends_at,
							  CASE WHEN a.status = 'active' AND a.ends_at <= $2 THEN 'expired' ELSE a.status END AS status) p
		   ON a.attempt IS NOT NULL
	WHERE m.active AND (m.ends_at IS NULL OR $2 < m.ends_at)
	  AND (m.activation = 'automatic'
		   OR EXISTS (SELECT 1 FROM loyalty.mission_optin o WHERE o.customer_id = $1 AND o.mission_id = m.mission_id))
	ORDER BY m.mission_id;
END;
$$;

CREATE OR REPLACE FUNCTION loyalty.campaign_kpi(marketing_campaign_id bigint, window_days integer DEFAULT 30,
									 cuped boolean DEFAULT true, margin_rate numeric DEFAULT NULL)
RETURNS TABLE (variant text, holdout boolean, audience bigint, offered bigint, filtered bigint,
			   redeemed bigint, redemption_rate double precision, discount_cost numeric,
			   redeemed_revenue numeric, redeemed_margin numeric, repurchase_rate double precision,
			   avg_basket_before numeric, avg_basket_after numeric,
			   revenue_per_member double precision, incremental_revenue_per_member double precision,
			   lift_lower double precision, lift_upper double precision, lift_df double precision,
			   incremental_revenue double precision, roi double precision)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
SET enable_mergejoin = off
AS $$
BEGIN
	IF marketing_campaign_id IS NULL OR window_days IS NULL OR cuped IS NULL THEN
		RAISE EXCEPTION 'marketing_campaign_id, window_days and cuped must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF window_days NOT BETWEEN 1 AND 3660 THEN
		RAISE EXCEPTION 'window_days must lie between 1 and 3660'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF margin_rate < 0 OR margin_rate > 1 THEN
		RAISE EXCEPTION 'margin_rate must lie between 0 and 1'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM loyalty.marketing_campaign m
				   WHERE m.marketing_campaign_id = campaign_kpi.marketing_campaign_id) THEN
		RAISE EXCEPTION 'marketing campaign % does not exist', campaign_kpi.marketing_campaign_id
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	/*
	 * On Citus the members query (an SQL function called from here) runs
	 * on the coordinator's empty shells of the distributed tables and
	 * would report no audience: refused until it is written for Citus.
	 */
	IF loyalty._citus_is_distributed('loyalty.campaign_publication'::pg_catalog.regclass) THEN
		RAISE EXCEPTION 'campaign_kpi does not support Citus tables yet'
			USING ERRCODE = 'feature_not_supported',
				  DETAIL = 'The campaign tables are distributed; the KPI query would read the coordinator''s empty shells of them.',
				  HINT = 'See doc/citus.md for what works on Citus.';
	END IF;
	RETURN QUERY
	-- one pass over the members: the per-variant totals and the moments of
	-- the lift (treated rows and hold-out rows apart), paired afterwards
	WITH v AS (
		SELECT m.variant, bool_or(m.holdout) AS holdout, count(*) AS audience,
			   count(*) FILTER (WHERE m.offered) AS offered,
			   count(*) FILTER (WHERE m.filtered_reason IS NOT NULL) AS filtered,
			   count(*) FILTER (WHERE m.redeemed) AS redeemed,
			   sum(m.discount) AS discount_cost, sum(m.redeemed_revenue) AS revenue,
			   sum(m.redeemed_margin) AS margin,
			   count(*) FILTER (WHERE m.redeemed AND m.redeemed_margin IS NOT NULL) AS with_margin,
			   count(*) FILTER (WHERE m.orders_after > 0) AS repurchasers,
			   sum(m.spend_before) AS spend_before, sum(m.orders_before) AS orders_before,
			   sum(m.spend_after) AS spend_after, sum(m.orders_after) AS orders_after,
			   loyalty._lift_moments(m.spend_after::double precision,
									 CASE WHEN campaign_kpi.cuped THEN m.spend_before::double precision END)
				   FILTER (WHERE NOT m.holdout) AS treated_moments,
			   loyalty._lift_moments(m.spend_after::double precision,
									 CASE WHEN campaign_kpi.cuped THEN m.spend_before::double precision END)
				   FILTER (WHERE m.holdout) AS control_moments
		FROM (SELECT x.variant, x.holdout, x.offered, x.filtered_reason, x.redeemed, x.discount,
					 x.redeemed_revenue, x.redeemed_margin, x.windows[1] AS orders_before,
					 x.windows[2] AS spend_before, x.windows[3] AS orders_after, x.windows[4] AS spend_after
			  FROM loyalty._campaign_members(campaign_kpi.marketing_campaign_id, campaign_kpi.window_days) x) m
		GROUP BY m.variant
	), lift AS (
		-- each treated variant against the hold-out, from the moments above
		SELECT v.variant, loyalty._lift_estimate(v.treated_moments, c.controls) AS e
		FROM v CROSS JOIN (SELECT array_agg(h.control_moments) AS controls FROM v h) c
		WHERE NOT v.holdout
	)
	SELECT v.variant, v.holdout, v.audience, v.offered, v.filtered, v.redeemed,
		   CASE WHEN v.offered > 0 THEN v.redeemed::double precision / v.offered END,
		   v.discount_cost, v.revenue,
		   CASE WHEN v.with_margin = v.redeemed AND v.redeemed > 0 THEN v.margin END,
		   v.repurchasers::double precision / v.audience,
		   CASE WHEN v.orders_before > 0 THEN round(v.spend_before / v.orders_before, 2) END,
		   CASE WHEN v.orders_after > 0 THEN round(v.spend_after / v.orders_after, 2) END,
		   (v.spend_after / v.audience)::double precision,
		   (l.e).difference, (l.e).lower, (l.e).upper, (l.e).df,
		   (l.e).difference * (l.e).n_treated,
		   CASE WHEN v.discount_cost > 0 AND (l.e).difference IS NOT NULL THEN
				((l.e).difference * (l.e).n_treated
				 * coalesce(campaign_kpi.margin_rate,
							CASE WHEN v.with_margin = v.redeemed AND v.revenue > 0
								 THEN (v.margin + v.discount_cost) / v.revenue END)::double precision
				 - v.discount_cost::double precision) / v.discount_cost::double precision END
	FROM v LEFT JOIN lift l ON l.variant IS NOT DISTINCT FROM v.variant
	ORDER BY v.holdout DESC, v.variant;
END;
$$;

-- END issue 14 Citus (newer families)


-- Issue 17, missions (tracked orders) and referral rewards: mission progress
-- from the tracking statement trigger (src/rfm_live order feed hook,
-- src/mission/mission_feed.c): loyalty.mission_order_source and
-- loyalty.mission_order_delta, the configuration trigger, the fold
-- (_mission_fold, mission_fold), and mission_order / mission_refund /
-- mission_progress folding first; referral coupon rewards (referral_program's
-- coupon columns, loyalty.referral_coupon, referral_settle, referral_coupons)
-- and the referee's first purchase seen by the tracking (through the fold).
-- ---------------------------------------------------------------------------

-- referral rewards: coupon columns of the programs (appended, as a fresh
-- install's table ends with them)
ALTER TABLE loyalty.referral_program
	ADD COLUMN referrer_campaign_id bigint,
	ADD COLUMN referee_campaign_id bigint,
	ADD COLUMN first_order_campaign_id bigint,
	ADD COLUMN coupon_pattern text NOT NULL DEFAULT 'RWD-####-####';
COMMENT ON COLUMN loyalty.referral_program.referrer_campaign_id IS 'Coupon campaign of a code bound to the referrer per successful referral, issued when the return window closes (NULL: none)';
COMMENT ON COLUMN loyalty.referral_program.referee_campaign_id IS 'Coupon campaign of a code bound to the referee on the first qualifying purchase, issued when the return window closes (NULL: none)';
COMMENT ON COLUMN loyalty.referral_program.first_order_campaign_id IS 'Coupon campaign of the referee''s first-order discount: a single-use code bound to the referee, issued at the join (NULL: none; give the campaign new_customers_only)';
COMMENT ON COLUMN loyalty.referral_program.coupon_pattern IS 'Pattern of the coupon reward codes (loyalty.random_codes)';

/*
 * Coupon rewards of referrals (doc/referrals.md#coupon-rewards): a code
 * bound to the referrer or the referee per conversion, pending until the
 * return window closes (issued then by referral_settle), and the
 * first-order discount issued to the referee at the join.  Keyed by the
 * holder (customer_id).
 */
CREATE TABLE loyalty.referral_coupon (
	customer_id		text COLLATE "C" NOT NULL,
	referee_id		text COLLATE "C" NOT NULL,
	role			text NOT NULL
		CONSTRAINT referral_coupon_role_check CHECK (role IN ('referrer', 'referee', 'first_order')),
	program			text COLLATE "C" NOT NULL,
	campaign_id		bigint NOT NULL,
	status			text NOT NULL DEFAULT 'pending'
		CONSTRAINT referral_coupon_status_check CHECK (status IN ('pending', 'issued', 'cancelled', 'voided')),
	available_at	timestamptz,
	coupon_id		bigint,
	code			text,
	created_at		timestamptz NOT NULL,
	issued_at		timestamptz,
	cancelled_at	timestamptz,
	PRIMARY KEY (customer_id, referee_id, role)
);

CREATE INDEX referral_coupon_pending_idx ON loyalty.referral_coupon (available_at) WHERE status = 'pending';

COMMENT ON TABLE loyalty.referral_coupon IS
	'Coupon rewards of referrals: a code bound to the referrer or the referee, pending until the return window closes, and the referee''s first-order discount';
COMMENT ON COLUMN loyalty.referral_coupon.customer_id IS 'The holder of the code (the referrer or the referee)';
COMMENT ON COLUMN loyalty.referral_coupon.referee_id IS 'The referral (its referee)';
COMMENT ON COLUMN loyalty.referral_coupon.role IS 'referrer or referee (a reward of the conversion), first_order (the referee''s discount on the first order, issued at the join)';
COMMENT ON COLUMN loyalty.referral_coupon.program IS 'The program';
COMMENT ON COLUMN loyalty.referral_coupon.campaign_id IS 'The coupon campaign of the code';
COMMENT ON COLUMN loyalty.referral_coupon.status IS 'pending (the return window is open: no code yet), issued (code bound to the holder), cancelled (the qualifying order was refunded while pending), voided (the code was voided by a refund)';
COMMENT ON COLUMN loyalty.referral_coupon.available_at IS 'End of the return window: referral_settle issues the code from then (NULL: at once)';
COMMENT ON COLUMN loyalty.referral_coupon.coupon_id IS 'The code issued (loyalty.coupon)';
COMMENT ON COLUMN loyalty.referral_coupon.code IS 'Its text';
COMMENT ON COLUMN loyalty.referral_coupon.created_at IS 'Business time of the join or conversion';
COMMENT ON COLUMN loyalty.referral_coupon.issued_at IS 'Business time the code was issued';
COMMENT ON COLUMN loyalty.referral_coupon.cancelled_at IS 'Business time of the refund that cancelled or voided it';

SELECT pg_catalog.pg_extension_config_dump('loyalty.referral_coupon'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.referral_coupon'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.referral_coupon'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/*
 * Issue the code of a pending coupon reward (locked here): one
 * single-use code of the campaign bound to the holder (generate_codes, as
 * exchange_points).  Nothing when it is no longer pending.
 */
CREATE FUNCTION loyalty._referral_coupon_issue(holder text, referee text, reward_role text, at timestamptz)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	rcp loyalty.referral_coupon;
	pattern text;
	before bigint[];
	issued record;
BEGIN
	SELECT c.* INTO rcp FROM loyalty.referral_coupon c
	WHERE c.customer_id = holder AND c.referee_id = referee AND c.role = reward_role FOR UPDATE;
	IF NOT FOUND OR rcp.status <> 'pending' THEN
		RETURN false;
	END IF;
	SELECT p.coupon_pattern INTO pattern FROM loyalty.referral_program p WHERE p.program = rcp.program;
	before := ARRAY(SELECT c.coupon_id FROM loyalty.coupon c
					WHERE c.campaign_id = rcp.campaign_id AND c.customer_id = holder);
	PERFORM loyalty.generate_codes(rcp.campaign_id, 1, COALESCE(pattern, 'RWD-####-####'), ARRAY[holder]);
	SELECT c.coupon_id, c.code::text AS code INTO STRICT issued
	FROM loyalty.coupon c
	WHERE c.campaign_id = rcp.campaign_id AND c.customer_id = holder
	  AND c.coupon_id <> ALL (before) AND loyalty._points_inserted_here(c.xmin);
	UPDATE loyalty.referral_coupon c
	SET status = 'issued', coupon_id = issued.coupon_id, code = issued.code, issued_at = at
	WHERE c.customer_id = holder AND c.referee_id = referee AND c.role = reward_role;
	RETURN true;
END;
$$;

COMMENT ON FUNCTION loyalty._referral_coupon_issue(text, text, text, timestamptz) IS
	'Internal: issue the code of a pending referral coupon reward (bound to its holder)';

/*
 * Record a coupon reward of the program for a holder (idempotent), issued
 * at once when available_at is NULL or passed, else pending until then.
 */
CREATE FUNCTION loyalty._referral_coupon_add(holder text, referee text, reward_role text,
											 prog loyalty.referral_program, at timestamptz, available_at timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	INSERT INTO loyalty.referral_coupon (customer_id, referee_id, role, program, campaign_id, available_at, created_at)
	VALUES (holder, referee, reward_role, prog.program,
			CASE reward_role WHEN 'referrer' THEN prog.referrer_campaign_id
							 WHEN 'referee' THEN prog.referee_campaign_id
							 ELSE prog.first_order_campaign_id END,
			available_at, at)
	ON CONFLICT ON CONSTRAINT referral_coupon_pkey DO NOTHING;
	IF available_at IS NULL OR available_at <= at THEN
		PERFORM loyalty._referral_coupon_issue(holder, referee, reward_role, at);
	END IF;
END;
$$;

COMMENT ON FUNCTION loyalty._referral_coupon_add(text, text, text, loyalty.referral_program, timestamptz, timestamptz) IS
	'Internal: record a referral coupon reward (pending until available_at, or issued at once)';

/*
 * A referral revoked by a refund: its pending coupon rewards are
 * cancelled (no code is ever issued), issued reward codes not used yet are
 * voided, and the referee's first-order discount code is voided (used or
 * not: a redemption rolled back must not free it for another order).
 */
CREATE OR REPLACE FUNCTION loyalty._referral_coupon_revoke(referee text, referrer text, at timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	rcp record;
	who text;
BEGIN
	-- one customer at a time, in key order: a locking read of one
	-- customer's rows is what Citus can run on a distributed table
	FOR who IN SELECT DISTINCT x.k COLLATE "C" FROM unnest(ARRAY[referee, referrer]) AS x(k)
			   WHERE x.k IS NOT NULL ORDER BY 1
	LOOP
	FOR rcp IN SELECT c.customer_id, c.role, c.status, c.coupon_id
			   FROM loyalty.referral_coupon c
			   WHERE c.customer_id = who AND c.referee_id = referee
				 AND c.status IN ('pending', 'issued')
			   ORDER BY c.role FOR UPDATE
	LOOP
		IF rcp.status = 'pending' THEN
			UPDATE loyalty.referral_coupon c SET status = 'cancelled', cancelled_at = at
			WHERE c.customer_id = rcp.customer_id AND c.referee_id = referee AND c.role = rcp.role;
		ELSE
			UPDATE loyalty.coupon k SET voided_at = at
			WHERE k.coupon_id = rcp.coupon_id AND k.voided_at IS NULL
			  AND (rcp.role = 'first_order' OR k.uses = 0);
			IF FOUND THEN
				UPDATE loyalty.referral_coupon c SET status = 'voided', cancelled_at = at
				WHERE c.customer_id = rcp.customer_id AND c.referee_id = referee AND c.role = rcp.role;
			END IF;
		END IF;
	END LOOP;
	END LOOP;
END;
$$;

COMMENT ON FUNCTION loyalty._referral_coupon_revoke(text, text, timestamptz) IS
	'Internal: a refunded referral cancels its pending coupon rewards and voids its unused reward codes and the first-order discount code';

/*
 * Issue the coupon rewards whose return window closed by at: of one
 * holder, or (customer_id => NULL, the default) of everyone.  What a
 * periodic job runs; referral_coupons settles its customer itself.
 * Returns the codes issued.
 */
CREATE FUNCTION loyalty.referral_settle(customer_id text DEFAULT NULL, at timestamptz DEFAULT pg_catalog.now())
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	rcp record;
	n bigint := 0;
BEGIN
	IF at IS NULL THEN
		RAISE EXCEPTION 'at must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	FOR rcp IN SELECT c.customer_id, c.referee_id, c.role FROM loyalty.referral_coupon c
			   WHERE c.status = 'pending' AND c.available_at <= at
				 AND (customer_id IS NULL OR c.customer_id = customer_id)
			   ORDER BY c.customer_id, c.referee_id, c.role
	LOOP
		IF loyalty._referral_coupon_issue(rcp.customer_id, rcp.referee_id, rcp.role, at) THEN
			n := n + 1;
		END IF;
	END LOOP;
	RETURN n;
END;
$$;

COMMENT ON FUNCTION loyalty.referral_settle(text, timestamptz) IS
	'Issue the referral coupon rewards whose return window closed by at, of one customer or of all (customer_id => NULL); returns the codes issued';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.referral_settle(text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.referral_settle(text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * The customer's referral coupons (as referrer or referee), after issuing
 * those whose return window closed by at: pending ones (no code yet, and
 * when it comes), issued codes, cancelled and voided ones.
 */
CREATE FUNCTION loyalty.referral_coupons(customer_id text, at timestamptz DEFAULT pg_catalog.now())
RETURNS TABLE (referee_id text, role text, program text, status text, available_at timestamptz, code text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
	IF $1 IS NULL OR $2 IS NULL THEN
		RAISE EXCEPTION 'customer_id and at must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, $1);
	PERFORM loyalty.referral_settle($1, $2);
	RETURN QUERY SELECT c.referee_id::text, c.role, c.program::text, c.status, c.available_at, c.code
				 FROM loyalty.referral_coupon c WHERE c.customer_id = $1
				 ORDER BY c.created_at, c.referee_id, c.role;
END;
$$;

COMMENT ON FUNCTION loyalty.referral_coupons(text, timestamptz) IS
	'The customer''s referral coupons (as referrer or referee) after issuing those whose return window closed: role, status (pending, issued, cancelled, voided), available_at and code';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.referral_coupons(text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * A friend joins with a code.  One referrer per referee, ever: the
 * referral row's primary key is the referee, so of two joins racing for one
 * referee the second waits and then repeats the first (same reference and
 * code) or is refused (LR004 already_referred).  The checks, in this order:
 * the code (LR001), the program (LR002), self-referral by customer key
 * (LR003), already referred (LR004, before every other check so that a
 * repeat returns the join even when the rules changed since), new customers
 * only (LR005), the referrer's good standing (LR006), the referrer's caps
 * (LR007), then the identifiers: one claimed by the referrer is a
 * self-referral (LR003), one claimed by any other customer is reused (LR008).
 * A refusal leaves nothing behind (no claim, no row).
 */
CREATE OR REPLACE FUNCTION loyalty.referral_join(customer_id text, reference text, code text,
									  at timestamptz DEFAULT pg_catalog.now(),
									  email text DEFAULT NULL, phone text DEFAULT NULL,
									  device_hash text DEFAULT NULL, payment_hash text DEFAULT NULL,
									  OUT program text, OUT referrer_id text, OUT status text, OUT joined_at timestamptz)
RETURNS record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	p_customer text := customer_id;
	p_reference text := reference;
	p_code loyalty.coupon_code;
	bad text;
	owner loyalty.referral_code_key;
	prog loyalty.referral_program;
	ref loyalty.referral;
	rc loyalty.referral_code;
	standing text;
	in_period integer;
	claim record;
	zone text;
BEGIN
	IF p_customer IS NULL OR p_reference IS NULL OR code IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, reference, code and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, p_customer);
	PERFORM loyalty._points_check_key('reference'::text, p_reference);
	IF at > pg_catalog.now() + '5 minutes'::interval THEN
		RAISE EXCEPTION 'at must not lie in the future'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'A business time may be at most 5 minutes ahead of the server clock.';
	END IF;

	bad := loyalty.coupon_code_check(code);
	IF bad IS NULL THEN
		p_code := code::loyalty.coupon_code;
		SELECT k.* INTO owner FROM loyalty.referral_code_key k WHERE k.code OPERATOR(loyalty.=) p_code;
	END IF;
	IF bad IS NOT NULL OR owner.code IS NULL THEN
		RAISE EXCEPTION 'unknown referral code "%"', code
			USING ERRCODE = 'LR001',
				  DETAIL = pg_catalog.json_build_object('reason', 'unknown_code', 'code', code,
								  'check', COALESCE(bad, 'not_found'))::text,
				  HINT = 'Check the code for typos.';
	END IF;

	-- a repeat returns the first join, whatever changed since
	SELECT r.* INTO ref FROM loyalty.referral r WHERE r.customer_id = p_customer;
	IF FOUND THEN
		IF ref.reference = p_reference AND ref.code OPERATOR(loyalty.=) p_code THEN
			program := ref.program; referrer_id := ref.referrer_id; status := ref.status; joined_at := ref.joined_at;
			RETURN;
		END IF;
		RAISE EXCEPTION 'customer "%" was already referred', p_customer
			USING ERRCODE = 'LR004',
				  DETAIL = pg_catalog.json_build_object('reason', 'already_referred', 'program', ref.program,
								  'same_referrer', ref.referrer_id = owner.customer_id)::text,
				  HINT = 'A customer can join a referral program once.';
	END IF;

	prog := loyalty._referral_program(owner.program);
	IF owner.customer_id = p_customer THEN
		RAISE EXCEPTION 'customer "%" cannot use their own referral code', p_customer
			USING ERRCODE = 'LR003',
				  DETAIL = pg_catalog.json_build_object('reason', 'self_referral', 'by', 'customer_id')::text;
	END IF;
	IF prog.new_customers_only AND loyalty._referral_orders(p_customer) > 0 THEN
		RAISE EXCEPTION 'customer "%" is not a new customer', p_customer
			USING ERRCODE = 'LR005',
				  DETAIL = pg_catalog.json_build_object('reason', 'not_new_customer', 'program', prog.program)::text,
				  HINT = 'Only customers without orders can join with a referral code.';
	END IF;
	standing := loyalty._referral_standing(owner.customer_id, prog);
	IF standing IS NOT NULL THEN
		RAISE EXCEPTION 'the referrer of code "%" is not in good standing', code
			USING ERRCODE = 'LR006',
				  DETAIL = pg_catalog.json_build_object('reason', 'referrer_not_in_good_standing', 'program', prog.program,
								  'rule', standing)::text;
	END IF;
	SELECT c.* INTO STRICT rc FROM loyalty.referral_code c
	WHERE c.customer_id = owner.customer_id AND c.program = prog.program;
	IF prog.cap_lifetime IS NOT NULL AND rc.converted >= prog.cap_lifetime THEN
		RAISE EXCEPTION 'the referrer of code "%" reached the referral cap', code
			USING ERRCODE = 'LR007',
				  DETAIL = pg_catalog.json_build_object('reason', 'referrer_cap_reached', 'program', prog.program,
								  'cap', 'lifetime', 'limit', prog.cap_lifetime, 'converted', rc.converted)::text;
	END IF;
	IF prog.cap_per_period IS NOT NULL THEN
		-- the zone first: on Citus a function reading a table may not run
		-- inside a statement on a distributed table
		zone := loyalty._referral_zone();
		SELECT p.converted INTO in_period FROM loyalty.referral_period p
		WHERE p.customer_id = owner.customer_id AND p.program = prog.program
		  AND p.period_start = pg_catalog.date_trunc(prog.cap_period, pg_catalog.timezone(zone, at))::date;
		IF COALESCE(in_period, 0) >= prog.cap_per_period THEN
			RAISE EXCEPTION 'the referrer of code "%" reached the referral cap', code
				USING ERRCODE = 'LR007',
					  DETAIL = pg_catalog.json_build_object('reason', 'referrer_cap_reached', 'program', prog.program,
									  'cap', 'period', 'limit', prog.cap_per_period, 'converted', in_period)::text;
		END IF;
	END IF;

	INSERT INTO loyalty.referral AS r (customer_id, reference, program, referrer_id, code, joined_at)
	VALUES (p_customer, p_reference, prog.program, owner.customer_id, owner.code, at)
	ON CONFLICT ON CONSTRAINT referral_pkey DO NOTHING;
	IF NOT FOUND THEN
		-- a concurrent join of this referee committed first
		SELECT r.* INTO ref FROM loyalty.referral r WHERE r.customer_id = p_customer;
		IF NOT FOUND THEN
			RAISE EXCEPTION 'could not serialize access due to a concurrent join'
				USING ERRCODE = 'serialization_failure',
					  DETAIL = 'Another transaction joined this customer after this transaction''s snapshot.';
		END IF;
		IF ref.reference = p_reference AND ref.code OPERATOR(loyalty.=) p_code THEN
			program := ref.program; referrer_id := ref.referrer_id; status := ref.status; joined_at := ref.joined_at;
			RETURN;
		END IF;
		RAISE EXCEPTION 'customer "%" was already referred', p_customer
			USING ERRCODE = 'LR004',
				  DETAIL = pg_catalog.json_build_object('reason', 'already_referred', 'program', ref.program,
								  'same_referrer', ref.referrer_id = owner.customer_id)::text,
				  HINT = 'A customer can join a referral program once.';
	END IF;

	claim := loyalty._referral_claim(p_customer, email, phone, device_hash, payment_hash);
	IF claim.owner = owner.customer_id THEN
		RAISE EXCEPTION 'customer "%" cannot use their own referral code', p_customer
			USING ERRCODE = 'LR003',
				  DETAIL = pg_catalog.json_build_object('reason', 'self_referral', 'by', claim.kind)::text;
	ELSIF claim.owner IS NOT NULL THEN
		RAISE EXCEPTION 'the % given is already used by another customer', claim.kind
			USING ERRCODE = 'LR008',
				  DETAIL = pg_catalog.json_build_object('reason', 'identifier_reused', 'kind', claim.kind)::text;
	END IF;

	-- the first-order discount: a code bound to the referee, at once
	IF prog.first_order_campaign_id IS NOT NULL THEN
		PERFORM loyalty._referral_coupon_add(p_customer, p_customer, 'first_order', prog, at, NULL);
	END IF;
	program := prog.program; referrer_id := owner.customer_id; status := 'joined'; joined_at := at;
END;
$$;

/*
 * The referee's purchase: the first one of at least min_order_amount
 * converts the referral and rewards both sides, pending until the return
 * window closes (at + return_window_days).  Never raises for a purchase
 * that does not qualify (it is called from checkouts and order triggers):
 * the status says what happened.  not_referred: the customer joined no
 * program; below_minimum: the amount is too small (a later order may
 * qualify); program_inactive: no conversion while the program is off;
 * converted: rewarded (this order; a repeat returns the first result);
 * refused: the referrer's cap or standing refused the rewards (reason), for
 * good; revoked: the qualifying order was refunded; already_converted:
 * another order converted the referral.
 * The referrer's code row is locked (FOR UPDATE) while the cap is checked
 * and counted, so two conversions of one referrer serialise and a cap is
 * never exceeded; points are credited in customer_id order (no deadlock
 * between mutual referrals).
 */
CREATE OR REPLACE FUNCTION loyalty.referral_order(customer_id text, order_ref text, amount numeric,
									   at timestamptz DEFAULT pg_catalog.now(),
									   OUT status text, OUT reason text, OUT referrer_id text,
									   OUT referrer_points bigint, OUT referee_points bigint,
									   OUT pending_until timestamptz)
RETURNS record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	p_customer text := customer_id;
	ref loyalty.referral;
	prog loyalty.referral_program;
	rc loyalty.referral_code;
	period date;
	in_period integer;
	refusal text;
	n_rank integer;
	side record;
BEGIN
	IF p_customer IS NULL OR order_ref IS NULL OR amount IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, order_ref, amount and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, p_customer);
	PERFORM loyalty._points_check_key('order_ref'::text, order_ref);

	SELECT r.* INTO ref FROM loyalty.referral r WHERE r.customer_id = p_customer FOR UPDATE;
	IF NOT FOUND THEN
		status := 'not_referred';
		RETURN;
	END IF;
	referrer_id := ref.referrer_id;
	IF ref.status <> 'joined' THEN
		status := CASE WHEN ref.order_ref = order_ref OR ref.status <> 'converted' THEN ref.status
					   ELSE 'already_converted' END;
		reason := ref.reason;
		referrer_points := ref.referrer_points; referee_points := ref.referee_points;
		pending_until := ref.pending_until;
		RETURN;
	END IF;
	SELECT p.* INTO prog FROM loyalty.referral_program p WHERE p.program = ref.program;
	IF NOT FOUND OR NOT prog.active THEN
		status := 'program_inactive';
		RETURN;
	END IF;
	IF amount < prog.min_order_amount THEN
		status := 'below_minimum';
		reason := 'min_order_amount';
		RETURN;
	END IF;

	SELECT c.* INTO STRICT rc FROM loyalty.referral_code c
	WHERE c.customer_id = ref.referrer_id AND c.program = ref.program FOR UPDATE;
	period := pg_catalog.date_trunc(prog.cap_period, pg_catalog.timezone(loyalty._referral_zone(), at))::date;
	SELECT p.converted INTO in_period FROM loyalty.referral_period p
	WHERE p.customer_id = ref.referrer_id AND p.program = ref.program AND p.period_start = period;
	IF prog.cap_lifetime IS NOT NULL AND rc.converted >= prog.cap_lifetime THEN
		refusal := 'referrer_cap_lifetime';
	ELSIF prog.cap_per_period IS NOT NULL AND COALESCE(in_period, 0) >= prog.cap_per_period THEN
		refusal := 'referrer_cap_period';
	ELSIF loyalty._referral_standing(ref.referrer_id, prog) IS NOT NULL THEN
		refusal := 'referrer_not_in_good_standing';
	END IF;
	IF refusal IS NOT NULL THEN
		UPDATE loyalty.referral r
		SET status = 'refused', reason = refusal, order_ref = referral_order.order_ref,
			order_amount = amount, converted_at = at
		WHERE r.customer_id = p_customer;
		status := 'refused'; reason := refusal;
		RETURN;
	END IF;

	n_rank := rc.converted + 1;
	referrer_points := COALESCE((SELECT t.referrer_points FROM loyalty.referral_reward_tier t
								 WHERE t.program = prog.program AND t.from_count <= n_rank
								 ORDER BY t.from_count DESC LIMIT 1), prog.referrer_points);
	referee_points := prog.referee_points;
	pending_until := at + pg_catalog.make_interval(days => prog.return_window_days);

	UPDATE loyalty.referral_code c SET converted = c.converted + 1
	WHERE c.customer_id = ref.referrer_id AND c.program = ref.program;
	INSERT INTO loyalty.referral_period AS p (customer_id, program, period_start, converted)
	VALUES (ref.referrer_id, ref.program, period, 1)
	ON CONFLICT ON CONSTRAINT referral_period_pkey DO UPDATE SET converted = p.converted + 1;
	UPDATE loyalty.referral r
	SET status = 'converted', order_ref = referral_order.order_ref, order_amount = amount,
		converted_at = at, pending_until = referral_order.pending_until, rank = n_rank,
		referrer_points = referral_order.referrer_points, referee_points = referral_order.referee_points
	WHERE r.customer_id = p_customer;

	-- both rewards, pending until the return window closes, in customer_id order
	FOR side IN SELECT * FROM (VALUES (p_customer, 'referee'::text, referee_points),
									  (ref.referrer_id, 'referrer'::text, referrer_points)) AS s(who, role, pts)
				WHERE s.pts > 0 ORDER BY s.who COLLATE "C"
	LOOP
		PERFORM loyalty.points_earn(side.who, loyalty._referral_reference(p_customer, side.role), side.pts,
									at => at, reason => 'referral ' || side.role || ' reward (' || prog.program || ')',
									pending_until => pending_until, qualifying => false);
	END LOOP;
	-- coupon rewards: pending until the return window closes (referral_settle)
	IF prog.referee_campaign_id IS NOT NULL THEN
		PERFORM loyalty._referral_coupon_add(p_customer, p_customer, 'referee', prog, at, pending_until);
	END IF;
	IF prog.referrer_campaign_id IS NOT NULL THEN
		PERFORM loyalty._referral_coupon_add(ref.referrer_id, p_customer, 'referrer', prog, at, pending_until);
	END IF;
	status := 'converted';
END;
$$;

/*
 * The referee's qualifying order was refunded: both rewards are taken back
 * (points_reverse: pending points cancelled, spent ones recorded as debt)
 * and the referral no longer counts for the referrer's caps and rank.
 * status: revoked (this call or a repeat), not_qualifying_order (another
 * order, or no conversion yet), not_referred.
 */
CREATE OR REPLACE FUNCTION loyalty.referral_refund(customer_id text, order_ref text,
										at timestamptz DEFAULT pg_catalog.now(),
										OUT status text, OUT referrer_id text,
										OUT referrer_points bigint, OUT referee_points bigint)
RETURNS record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	p_customer text := customer_id;
	ref loyalty.referral;
	period date;
	side record;
	zone text;
BEGIN
	IF p_customer IS NULL OR order_ref IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, order_ref and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, p_customer);
	PERFORM loyalty._points_check_key('order_ref'::text, order_ref);

	SELECT r.* INTO ref FROM loyalty.referral r WHERE r.customer_id = p_customer FOR UPDATE;
	IF NOT FOUND THEN
		status := 'not_referred';
		RETURN;
	END IF;
	referrer_id := ref.referrer_id;
	referrer_points := ref.referrer_points; referee_points := ref.referee_points;
	IF ref.order_ref IS DISTINCT FROM order_ref OR ref.status NOT IN ('converted', 'revoked') THEN
		status := 'not_qualifying_order';
		referrer_points := NULL; referee_points := NULL;
		RETURN;
	END IF;
	status := 'revoked';
	IF ref.status = 'revoked' THEN
		RETURN;
	END IF;

	PERFORM 1 FROM loyalty.referral_code c
	WHERE c.customer_id = ref.referrer_id AND c.program = ref.program FOR UPDATE;
	UPDATE loyalty.referral_code c SET converted = c.converted - 1
	WHERE c.customer_id = ref.referrer_id AND c.program = ref.program;
	zone := loyalty._referral_zone();
	SELECT pg_catalog.date_trunc(p.cap_period, pg_catalog.timezone(zone, ref.converted_at))::date
	INTO period FROM loyalty.referral_program p WHERE p.program = ref.program;
	UPDATE loyalty.referral_period p SET converted = p.converted - 1
	WHERE p.customer_id = ref.referrer_id AND p.program = ref.program AND p.period_start = period;
	UPDATE loyalty.referral r SET status = 'revoked', revoked_at = at WHERE r.customer_id = p_customer;

	FOR side IN SELECT * FROM (VALUES (p_customer, 'referee'::text, ref.referee_points),
									  (ref.referrer_id, 'referrer'::text, ref.referrer_points)) AS s(who, role, pts)
				WHERE s.pts > 0 ORDER BY s.who COLLATE "C"
	LOOP
		PERFORM loyalty.points_reverse(side.who, loyalty._referral_reference(p_customer, side.role), at => at);
	END LOOP;
	PERFORM loyalty._referral_coupon_revoke(p_customer, ref.referrer_id, at);
END;
$$;

CREATE TABLE loyalty.mission_order_source (
	orders			regclass PRIMARY KEY,
	category_column	name NOT NULL
);

COMMENT ON TABLE loyalty.mission_order_source IS
	'Tracked orders tables whose orders carry categories for missions (configuration): the column holding an order''s category (a scalar) or categories (an array); can be a Citus reference table';
COMMENT ON COLUMN loyalty.mission_order_source.orders IS 'A tracked orders table (loyalty.track_orders)';
COMMENT ON COLUMN loyalty.mission_order_source.category_column IS 'Its column read as the order''s categories (missing: the order has none)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.mission_order_source'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.mission_order_source'::pg_catalog.regclass, 'SELECT, INSERT, UPDATE, DELETE'::pg_catalog.text);

/*
 * The orders of tracked statements, appended by the tracking trigger
 * while an active mission counts orders (mission_feed.c) and folded into
 * the attempts by _mission_fold.  No key and no index, as
 * loyalty.customer_stats_delta: the checkout path only appends; a fold
 * deletes the rows its snapshot sees.
 */
CREATE TABLE loyalty.mission_order_delta (
	customer_id		text COLLATE "C" NOT NULL,
	ordered_at		timestamptz NOT NULL,
	amount			numeric NOT NULL,
	categories		text[],
	sign			smallint NOT NULL,
	logged_at		timestamptz NOT NULL
);

COMMENT ON TABLE loyalty.mission_order_delta IS
	'Orders of tracked statements not yet counted for missions (appended by the tracking trigger, folded by mission_progress, mission_order, mission_refund and mission_fold)';
COMMENT ON COLUMN loyalty.mission_order_delta.customer_id IS 'The customer';
COMMENT ON COLUMN loyalty.mission_order_delta.ordered_at IS 'The order''s time (its tracked time column)';
COMMENT ON COLUMN loyalty.mission_order_delta.amount IS 'The order''s amount (0 when null)';
COMMENT ON COLUMN loyalty.mission_order_delta.categories IS 'The order''s categories (loyalty.mission_order_source), NULL when no active mission filters on one';
COMMENT ON COLUMN loyalty.mission_order_delta.sign IS '1: an order; -1: an order removed (deleted, or its counted status, customer, time, amount or categories changed): a refund';
COMMENT ON COLUMN loyalty.mission_order_delta.logged_at IS 'Start of the statement that wrote it: the fold''s order, and the time of a refund';

SELECT pg_catalog.pg_extension_config_dump('loyalty.mission_order_delta'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.mission_order_delta'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/*
 * Every change of the configuration tables read by the order feed
 * (missions, their category columns, referral programs) reaches every
 * session's cache.
 */
CREATE FUNCTION loyalty._mission_config_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'mission_config_changed'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION loyalty._mission_config_changed() IS
	'Internal: drop the order feed''s cached mission configuration in every session when it changes';

CREATE TRIGGER mission_config_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON loyalty.mission
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._mission_config_changed();
CREATE TRIGGER mission_order_source_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON loyalty.mission_order_source
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._mission_config_changed();
CREATE TRIGGER referral_program_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON loyalty.referral_program
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._mission_config_changed();
ALTER TABLE loyalty.mission ENABLE ALWAYS TRIGGER mission_config_changed;
ALTER TABLE loyalty.mission_order_source ENABLE ALWAYS TRIGGER mission_order_source_changed;
ALTER TABLE loyalty.referral_program ENABLE ALWAYS TRIGGER referral_program_changed;

/*
 * An order of the customer counts for every open mission of kind orders,
 * spend or streak it qualifies for (category among the order's categories,
 * amount >= min_amount), in mission_id order: the attempts it counted for.
 * Idempotent on order_ref.  Shared by mission_order and the fold of
 * tracked orders.
 */
CREATE FUNCTION loyalty._mission_order_apply(customer_id text, order_ref text, amount numeric,
											 at timestamptz, categories text[])
RETURNS TABLE (mission_id text, attempt integer, progress numeric, target numeric, status text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	m loyalty.mission;
	a loyalty.mission_attempt;
	locked boolean := false;
BEGIN
	FOR m IN SELECT x.* FROM loyalty.mission x
			 WHERE x.active AND x.kind IN ('orders', 'spend', 'streak')
			   AND (x.starts_at IS NULL OR x.starts_at <= at) AND (x.ends_at IS NULL OR at < x.ends_at)
			   AND amount >= x.min_amount
			   AND (x.category IS NULL OR x.category = ANY (categories))
			 ORDER BY x.mission_id
	LOOP
		IF NOT locked THEN
			PERFORM loyalty._mission_lock(customer_id, at);
			locked := true;
		END IF;
		a := loyalty._mission_count(customer_id, m, order_ref, amount, at);
		IF a.attempt IS NOT NULL THEN
			mission_id := m.mission_id; attempt := a.attempt; progress := a.progress;
			target := m.target; status := a.status;
			RETURN NEXT;
		END IF;
	END LOOP;
END;
$$;

COMMENT ON FUNCTION loyalty._mission_order_apply(text, text, numeric, timestamptz, text[]) IS
	'Internal: count an order for the customer''s open order, spend and streak missions (mission_order and the fold of tracked orders)';

/*
 * An order the app reports: the customer's tracked orders not yet counted
 * are folded first (they came before it), then the order counts
 * (_mission_order_apply).  Idempotent on order_ref.
 */
CREATE OR REPLACE FUNCTION loyalty.mission_order(customer_id text, order_ref text, amount numeric,
									  at timestamptz DEFAULT pg_catalog.now(),
									  categories text[] DEFAULT NULL)
RETURNS TABLE (mission_id text, attempt integer, progress numeric, target numeric, status text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
	IF customer_id IS NULL OR order_ref IS NULL OR amount IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, order_ref, amount and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, customer_id);
	PERFORM loyalty._points_check_key('order_ref'::text, order_ref);
	PERFORM loyalty._mission_fold(customer_id);
	RETURN QUERY SELECT * FROM loyalty._mission_order_apply(customer_id, order_ref, amount, at, categories);
END;
$$;

COMMENT ON FUNCTION loyalty.mission_order(text, text, numeric, timestamptz, text[]) IS
	'Count an order for the customer''s open order, spend and streak missions (categories => the order''s categories); completion credits the reward; idempotent on order_ref';

/*
 * A refund (or a withdrawn event): every contribution of the reference is
 * taken back from its attempt.  A completed attempt that falls below its
 * target before its reward settles (at < pending_until) is undone: the
 * reward is reversed and the attempt is active again (its period is kept).
 * After the reward settled the completion stands.  Idempotent.  Shared by
 * mission_refund and the fold of tracked orders.
 */
CREATE FUNCTION loyalty._mission_refund_apply(customer_id text, order_ref text, at timestamptz)
RETURNS TABLE (mission_id text, attempt integer, progress numeric, target numeric, status text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	c record;
	a loyalty.mission_attempt;
BEGIN
	IF EXISTS (SELECT 1 FROM loyalty.mission_contribution k
			   WHERE k.customer_id = customer_id AND k.source_ref = order_ref AND k.rolled_back_at IS NULL) THEN
		PERFORM loyalty._mission_lock(customer_id, at);
	END IF;
	FOR c IN SELECT k.mission_id, k.attempt, k.delta, m.target AS m_target
			 FROM loyalty.mission_contribution k JOIN loyalty.mission m ON m.mission_id = k.mission_id
			 WHERE k.customer_id = customer_id AND k.source_ref = order_ref AND k.rolled_back_at IS NULL
			 ORDER BY k.mission_id
	LOOP
		SELECT x.* INTO a FROM loyalty.mission_attempt x
		WHERE x.customer_id = customer_id AND x.mission_id = c.mission_id AND x.attempt = c.attempt FOR UPDATE;
		UPDATE loyalty.mission_contribution k SET rolled_back_at = at
		WHERE k.customer_id = customer_id AND k.mission_id = c.mission_id AND k.source_ref = order_ref;
		a.progress := a.progress - c.delta;
		IF a.status = 'completed' AND a.progress < c.m_target AND at < a.pending_until THEN
			IF a.reward_points > 0 THEN
				PERFORM loyalty.points_reverse(customer_id,
											   loyalty._mission_reference(customer_id, c.mission_id, a.attempt, a.undone), at => at);
			END IF;
			a.status := 'active';
			a.undone := a.undone + 1;
			a.completed_at := NULL; a.completed_by := NULL; a.reward_points := NULL; a.pending_until := NULL;
		END IF;
		UPDATE loyalty.mission_attempt x
		SET progress = a.progress, status = a.status, undone = a.undone, completed_at = a.completed_at,
			completed_by = a.completed_by, reward_points = a.reward_points, pending_until = a.pending_until
		WHERE x.customer_id = customer_id AND x.mission_id = c.mission_id AND x.attempt = c.attempt;
		mission_id := c.mission_id; attempt := a.attempt; progress := a.progress;
		target := c.m_target; status := a.status;
		RETURN NEXT;
	END LOOP;
END;
$$;

COMMENT ON FUNCTION loyalty._mission_refund_apply(text, text, timestamptz) IS
	'Internal: take back what an order or event reference added to missions, undoing a completion whose reward is still pending (mission_refund and the fold of tracked orders)';

/*
 * A refund the app reports: the customer's tracked orders not yet counted
 * are folded first, then the reference is taken back
 * (_mission_refund_apply).  Idempotent.
 */
CREATE OR REPLACE FUNCTION loyalty.mission_refund(customer_id text, order_ref text,
									   at timestamptz DEFAULT pg_catalog.now())
RETURNS TABLE (mission_id text, attempt integer, progress numeric, target numeric, status text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
	IF customer_id IS NULL OR order_ref IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, order_ref and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, customer_id);
	PERFORM loyalty._mission_fold(customer_id);
	RETURN QUERY SELECT * FROM loyalty._mission_refund_apply(customer_id, order_ref, at);
END;
$$;

COMMENT ON FUNCTION loyalty.mission_refund(text, text, timestamptz) IS
	'Take back what an order (or event reference) added to missions; a completion whose reward is still pending is undone (reward reversed); idempotent';

/*
 * The reference a tracked order counts under: tracked:<order time, UTC,
 * to the microsecond>:<amount>#<n>, n telling apart equal orders of the
 * customer (a tracked table names no order id).
 */
CREATE FUNCTION loyalty._mission_tracked_ref(at timestamptz, amount numeric)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT pg_catalog.concat('tracked:', pg_catalog.to_char(pg_catalog.timezone('UTC', $1), 'YYYYMMDDHH24MISSUS'),
							 ':', $2::text)
$$;

COMMENT ON FUNCTION loyalty._mission_tracked_ref(timestamptz, numeric) IS
	'Internal: the reference prefix of a tracked order in mission contributions (tracked:<UTC time>:<amount>, then #n)';

/*
 * Fold the customer's tracked orders not yet counted (the rows of
 * loyalty.mission_order_delta this snapshot sees, deleted as they are
 * read) into the missions and the customer's referral, in the order they
 * were written: an order counts as mission_order would count it (at its
 * order time, reference tracked:<time>:<amount>#n, a new n per equal
 * order) and, for a referee not converted yet, as referral_order; a
 * removed order (-1) takes back the latest counted equal order as
 * mission_refund would, and the referral's qualifying order as
 * referral_refund, at the time of the statement that removed it.  Rows of transactions in
 * flight wait for the next fold.  Under the customer's mission lock.
 * Returns the rows folded.
 */
CREATE FUNCTION loyalty._mission_fold(customer_id text)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	d record;
	last_at timestamptz;
	base text;
	k integer;
	oref text;
	n integer := 0;
BEGIN
	SELECT pg_catalog.max(x.ordered_at) INTO last_at
	FROM loyalty.mission_order_delta x WHERE x.customer_id = customer_id;
	IF last_at IS NULL THEN
		RETURN 0;
	END IF;
	PERFORM loyalty._mission_lock(customer_id, last_at);
	FOR d IN WITH taken AS (DELETE FROM loyalty.mission_order_delta x WHERE x.customer_id = customer_id
							RETURNING x.ordered_at, x.amount, x.categories, x.sign, x.logged_at)
			 SELECT t.* FROM taken t ORDER BY t.logged_at, t.sign, t.ordered_at, t.amount
	LOOP
		n := n + 1;
		base := loyalty._mission_tracked_ref(d.ordered_at, d.amount) || '#';
		IF d.sign > 0 THEN
			SELECT COALESCE(pg_catalog.max(pg_catalog.substr(c.source_ref, pg_catalog.length(base) + 1)::integer), 0) + 1
			INTO k FROM loyalty.mission_contribution c
			WHERE c.customer_id = customer_id AND pg_catalog.starts_with(c.source_ref, base);
			-- a referee's first qualifying purchase (referral family; first:
			-- the referral row is locked before the points accounts)
			IF EXISTS (SELECT 1 FROM loyalty.referral r WHERE r.customer_id = customer_id AND r.status = 'joined') THEN
				PERFORM loyalty.referral_order(customer_id, base || k, d.amount, at => d.ordered_at);
			END IF;
			PERFORM loyalty._mission_order_apply(customer_id, base || k, d.amount, d.ordered_at, d.categories);
		ELSE
			SELECT pg_catalog.max(pg_catalog.substr(c.source_ref, pg_catalog.length(base) + 1)::integer)
			INTO k FROM loyalty.mission_contribution c
			WHERE c.customer_id = customer_id AND pg_catalog.starts_with(c.source_ref, base)
			  AND c.rolled_back_at IS NULL;
			SELECT r.order_ref INTO oref FROM loyalty.referral r
			WHERE r.customer_id = customer_id AND r.status = 'converted' AND pg_catalog.starts_with(r.order_ref, base);
			IF FOUND THEN
				PERFORM loyalty.referral_refund(customer_id, oref, at => d.logged_at);
			END IF;
			IF k IS NOT NULL THEN
				PERFORM loyalty._mission_refund_apply(customer_id, base || k, d.logged_at);
			END IF;
		END IF;
	END LOOP;
	RETURN n;
END;
$$;

COMMENT ON FUNCTION loyalty._mission_fold(text) IS
	'Internal: count the customer''s tracked orders not yet counted for missions (and take back the removed ones), in the order they were written';

/*
 * Fold the tracked orders not yet counted for missions: of one customer,
 * or (customer_id => NULL, the default) of every customer, one after the
 * other in customer order.  What a periodic job runs so that completions
 * and their pending rewards follow the orders without waiting for a
 * reader; mission_progress, mission_order and mission_refund fold their
 * customer themselves.  Returns the tracked rows folded.
 */
CREATE FUNCTION loyalty.mission_fold(customer_id text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	c text;
	n bigint := 0;
BEGIN
	IF customer_id IS NOT NULL THEN
		RETURN loyalty._mission_fold(customer_id);
	END IF;
	FOR c IN SELECT DISTINCT x.customer_id FROM loyalty.mission_order_delta x ORDER BY 1 LOOP
		n := n + loyalty._mission_fold(c);
	END LOOP;
	RETURN n;
END;
$$;

COMMENT ON FUNCTION loyalty.mission_fold(text) IS
	'Count the tracked orders not yet counted for missions (completions, rewards, refunds), of one customer or of all (customer_id => NULL); returns the tracked rows folded';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.mission_fold(text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.mission_fold(text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * Progress of a customer on every open mission ("2 of 3 orders, 12 days
 * left"): the current attempt, or 0 of the target when none started.
 * The customer's tracked orders not yet counted are folded first (not in a
 * read-only transaction: there the progress is that of the last fold).
 */
CREATE OR REPLACE FUNCTION loyalty.mission_progress(customer_id text, at timestamptz DEFAULT pg_catalog.now())
RETURNS TABLE (mission_id text, description text, attempt integer, progress numeric, target numeric,
			   status text, ends_at timestamptz, days_left integer, message text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
	-- the customer's pending tracked orders folded first (not possible in
	-- a read-only transaction: then the progress as last folded)
	IF NOT pg_catalog.current_setting('transaction_read_only')::boolean THEN
		PERFORM loyalty._mission_fold($1);
	END IF;
	-- PL/pgSQL, not SQL: Citus plans a query with parameters of an SQL
	-- function on distributed tables only in PL/pgSQL
	RETURN QUERY
	SELECT m.mission_id, m.description, a.attempt,
		   COALESCE(p.progress, 0), m.target, COALESCE(p.status, 'not_started'),
		   p.ends_at,
		   CASE WHEN p.ends_at IS NOT NULL
				THEN GREATEST(0, pg_catalog.ceil(pg_catalog.date_part('epoch', p.ends_at - $2) / 86400)::integer) END,
		   pg_catalog.format('%s of %s %s%s',
				  COALESCE(p.progress, 0)::text, m.target::text,
				  CASE m.kind WHEN 'orders' THEN 'orders' WHEN 'spend' THEN 'spent'
							  WHEN 'streak' THEN 'months in a row' ELSE m.event || 's' END,
				  CASE WHEN p.status = 'completed' THEN ', completed'
					   WHEN p.ends_at IS NOT NULL
					   THEN pg_catalog.format(', %s days left',
							   GREATEST(0, pg_catalog.ceil(pg_catalog.date_part('epoch', p.ends_at - $2) / 86400)::integer))
					   ELSE '' END)
	FROM loyalty.mission m
	LEFT JOIN LATERAL (SELECT x.* FROM loyalty.mission_attempt x
					   WHERE x.customer_id = $1 AND x.mission_id = m.mission_id
					   ORDER BY x.attempt DESC LIMIT 1) a ON true
	LEFT JOIN LATERAL (SELECT a.progress, a.ends_at,
							  CASE WHEN a.status = 'active' AND a.ends_at <= $2 THEN 'expired' ELSE a.status END AS status) p
		   ON a.attempt IS NOT NULL
	WHERE m.active AND (m.ends_at IS NULL OR $2 < m.ends_at)
	  AND (m.activation = 'automatic'
		   OR EXISTS (SELECT 1 FROM loyalty.mission_optin o WHERE o.customer_id = $1 AND o.mission_id = m.mission_id))
	ORDER BY m.mission_id;
END;
$$;

COMMENT ON FUNCTION loyalty.mission_progress(text, timestamptz) IS
	'Progress of a customer on every open mission (automatic, or opted in): attempt, progress of target, status, days left, and a message such as "2 of 3 orders, 12 days left"';

-- END issue 17 missions (tracked orders)

/* ---------------------------------------------------------------------------
 * Issue 17, referral KPIs: the cost of a program counts the discounts its
 * reward and first-order codes gave (net of reversals and returns), not
 * only the points; a new last column coupon_cost.
 * ------------------------------------------------------------------------ */
-- Issue 17, referral KPIs (coupon rewards in the cost)

CREATE OR REPLACE VIEW loyalty.referral_kpi AS
WITH codes AS (
	SELECT c.program, pg_catalog.count(*) AS codes FROM loyalty.referral_code c GROUP BY c.program
), refs AS (
	SELECT r.program,
		   pg_catalog.count(*) AS joined,
		   pg_catalog.count(*) FILTER (WHERE r.status = 'converted') AS converted,
		   pg_catalog.count(*) FILTER (WHERE r.status = 'converted' AND r.pending_until > pg_catalog.now()) AS pending,
		   pg_catalog.count(*) FILTER (WHERE r.status = 'refused') AS refused,
		   pg_catalog.count(*) FILTER (WHERE r.status = 'revoked') AS revoked,
		   COALESCE(pg_catalog.sum(r.referrer_points + r.referee_points) FILTER (WHERE r.status = 'converted'), 0)::bigint AS points_cost,
		   COALESCE(pg_catalog.sum(r.order_amount) FILTER (WHERE r.status = 'converted'), 0) AS qualifying_revenue,
		   pg_catalog.sum(s.spend_total) AS referred_revenue
	FROM loyalty.referral r
	LEFT JOIN loyalty.customer_stats s ON s.customer_id = r.customer_id
	GROUP BY r.program
), coupons AS (
	-- the discounts given by the reward and first-order codes, net of
	-- reversals and returns (the redemption ledger's signed rows)
	SELECT rc.program, pg_catalog.sum(d.discount) AS coupon_cost
	FROM loyalty.referral_coupon rc
	JOIN loyalty.redemption d ON d.customer_id = rc.customer_id AND d.coupon_id = rc.coupon_id
	GROUP BY rc.program
)
SELECT p.program,
	   COALESCE(c.codes, 0) AS codes,
	   COALESCE(r.joined, 0) AS invites_used,
	   COALESCE(r.converted, 0) AS conversions,
	   CASE WHEN r.joined > 0 THEN pg_catalog.round(r.converted::numeric / r.joined, 4) END AS conversion_rate,
	   COALESCE(r.pending, 0) AS pending,
	   COALESCE(r.refused, 0) AS refused,
	   COALESCE(r.revoked, 0) AS revoked,
	   COALESCE(r.points_cost, 0) AS points_cost,
	   x.cost,
	   COALESCE(r.qualifying_revenue, 0) AS qualifying_revenue,
	   r.referred_revenue,
	   CASE WHEN x.cost > 0
			THEN pg_catalog.round((COALESCE(r.referred_revenue, r.qualifying_revenue) - x.cost) / x.cost, 4) END AS roi,
	   COALESCE(k.coupon_cost, 0) AS coupon_cost
FROM loyalty.referral_program p
LEFT JOIN codes c ON c.program = p.program
LEFT JOIN refs r ON r.program = p.program
LEFT JOIN coupons k ON k.program = p.program
CROSS JOIN LATERAL (SELECT CASE WHEN COALESCE(r.points_cost, 0) = 0 THEN COALESCE(k.coupon_cost, 0)
								ELSE r.points_cost * p.point_value + COALESCE(k.coupon_cost, 0) END AS cost) x;

COMMENT ON VIEW loyalty.referral_kpi IS
	'Referral KPIs per program: codes, invites used (joins), conversions, conversion rate, pending, refused, revoked, points cost and money cost (points and reward codes), qualifying revenue, revenue of referred customers, ROI';
COMMENT ON COLUMN loyalty.referral_kpi.program IS 'The program';
COMMENT ON COLUMN loyalty.referral_kpi.codes IS 'Referral codes created';
COMMENT ON COLUMN loyalty.referral_kpi.invites_used IS 'Friends who joined with a code';
COMMENT ON COLUMN loyalty.referral_kpi.conversions IS 'Referrals rewarded and not revoked';
COMMENT ON COLUMN loyalty.referral_kpi.conversion_rate IS 'conversions / invites_used';
COMMENT ON COLUMN loyalty.referral_kpi.pending IS 'Conversions whose rewards are still pending (return window open)';
COMMENT ON COLUMN loyalty.referral_kpi.refused IS 'Purchases refused by a cap or the referrer''s standing';
COMMENT ON COLUMN loyalty.referral_kpi.revoked IS 'Conversions whose qualifying order was refunded';
COMMENT ON COLUMN loyalty.referral_kpi.points_cost IS 'Points of both sides'' rewards not revoked';
COMMENT ON COLUMN loyalty.referral_kpi.cost IS 'points_cost * point_value plus coupon_cost (NULL when points were given and point_value is unknown)';
COMMENT ON COLUMN loyalty.referral_kpi.coupon_cost IS 'Discounts given by the program''s reward and first-order codes, net of reversals and returns';
COMMENT ON COLUMN loyalty.referral_kpi.qualifying_revenue IS 'Amount of the qualifying orders not revoked';
COMMENT ON COLUMN loyalty.referral_kpi.referred_revenue IS 'Tracked spend of all referees (loyalty.customer_stats as of the last fold; NULL when none is tracked)';
COMMENT ON COLUMN loyalty.referral_kpi.roi IS '(referred_revenue, else qualifying_revenue, - cost) / cost';

/* ---------------------------------------------------------------------------
 * Last: nothing for PUBLIC, then the recorded access levels re-applied to
 * every object (grants.sql of the install script, then reapply_grants).
 * ------------------------------------------------------------------------ */
REVOKE ALL ON SCHEMA loyalty FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA loyalty FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA loyalty FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA loyalty FROM PUBLIC;

SELECT loyalty.reapply_grants();
