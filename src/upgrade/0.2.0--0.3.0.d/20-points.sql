-- points family, 0.2.0 -> 0.3.0 (issue 11: references, exchanges, business
-- times, program currency, parallel restore).  Every object below is
-- created or re-created exactly as in a fresh 0.3.0 install.

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
 * Units of a campaign's cap taken (customer_id NULL: the total cap; else
 * that customer's): active redemptions, reservations live at "at", and
 * codes sold by exchanges that are not used, not reserved and not voided
 * (each holds the unit its buyer paid for).  Read with the statement's
 * snapshot, under exchange_points' locks.
 */
CREATE OR REPLACE FUNCTION loyalty._points_cap_in_use(campaign_id bigint, customer_id text, at timestamptz)
RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT (SELECT coalesce(sum(r.uses), 0) FROM loyalty.redemption r
			WHERE r.campaign_id = $1 AND ($2 IS NULL OR r.customer_id = $2))::bigint
		 + (SELECT count(*) FROM loyalty.reservation h
			WHERE h.campaign_id = $1 AND ($2 IS NULL OR h.customer_id = $2)
			  AND h.state = 'held' AND h.expires_at > $3)
		 + (SELECT count(*) FROM loyalty.points_exchange e
			JOIN loyalty.coupon c ON c.coupon_id = e.coupon_id
			WHERE e.campaign_id = $1 AND ($2 IS NULL OR e.customer_id = $2)
			  AND c.uses = 0 AND c.voided_at IS NULL
			  AND NOT EXISTS (SELECT 1 FROM loyalty.reservation h
							  WHERE h.coupon_id = c.coupon_id AND h.state = 'held' AND h.expires_at > $3))
$$;

COMMENT ON FUNCTION loyalty._points_cap_in_use(bigint, text, timestamptz) IS
	'Internal: units of a campaign''s total (customer NULL) or per-customer cap taken by redemptions, live reservations and unused exchanged codes';

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
 * Exchange points for a coupon.  The points are spent under reference
 * 'exchange:' || reference (locking the account, idempotent); the code is
 * generated only after the spend, so a repeat that waited for a concurrent
 * first call finds that call's exchange and returns it.  A spend under the
 * derived reference made by another call (not an exchange) is a conflict.
 *
 * Caps: a coupon that could not be used is never sold.  Before any point is
 * spent, a campaign with a total_cap or per_customer_cap counts its units
 * in use -- active redemptions, live reservations, and codes sold by
 * earlier exchanges that are neither used, reserved nor voided -- and
 * refuses with LP009 when the cap is reached.  Exchanges of a capped
 * campaign serialise on its points_reward row, which each one updates (a
 * REPEATABLE READ competitor then fails with 40001 instead of counting from
 * a stale snapshot); with a total cap the campaign row is locked too, as
 * redeem_coupon locks it, so a concurrent redemption is counted.
 *
 * The code returned is the one this call issued: the coupon bound to the
 * customer that this transaction inserted and that was not there before
 * (never "the newest code", which ids from cached sequences or an admin's
 * bound code would make another one).
 */
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
			in_use := loyalty._points_cap_in_use(p_campaign, NULL, at);
			IF in_use >= camp.total_cap THEN
				RAISE EXCEPTION 'campaign % has no coupon left to exchange', p_campaign
					USING ERRCODE = 'LP009',
						  DETAIL = format('Its total cap of %s is reached (%s in use, reserved or sold for points).',
										  camp.total_cap, in_use),
						  HINT = 'No points were spent.';
			END IF;
		END IF;
		IF camp.per_customer_cap IS NOT NULL THEN
			in_use := loyalty._points_cap_in_use(p_campaign, p_customer, at);
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

	INSERT INTO loyalty.points_exchange (reference, customer_id, campaign_id, points, coupon_id, code,
										 entry_id, available_after, effective_at)
	VALUES (p_reference, p_customer, p_campaign, reward.points, issued.coupon_id, issued.code,
			spent.entry_id, spent.available, at);
	code := issued.code; points := reward.points; available := spent.available;
END;
$$;

COMMENT ON FUNCTION loyalty.exchange_points(text, bigint, text, timestamptz) IS
	'Spend the points a campaign''s coupon costs (loyalty.points_reward) and issue a single-use code bound to the customer; idempotent on reference; LP001 short, LP007 not offered, LP008 campaign paused or ended, LP009 cap reached (nothing spent)';

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
	ORDER BY 1, 2, 3
$$;

COMMENT ON FUNCTION loyalty.check_integrity() IS
	'Every violation of the points invariants (balance = open lots = ledger sum, no negative balance, debt, well-formed lots and entries, references and their one owner, totals, tiers and that they exist); empty when healthy';

