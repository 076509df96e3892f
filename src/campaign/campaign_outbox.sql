
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
