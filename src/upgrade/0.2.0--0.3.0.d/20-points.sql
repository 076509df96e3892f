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

