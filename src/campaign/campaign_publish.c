/*
 * campaign_publish.c
 *		The one-pass writer of a marketing campaign that offers bound
 *		generated codes: loyalty._publish_codes_direct().
 *
 * loyalty._publish (campaign_publish.sql) classifies the audience in a
 * temporary stage table and writes codes, publications and outbox rows in
 * statements.  For the common campaign -- bound codes, no experiment, no
 * frequency cap on its channel, no quiet period, its coupon campaign
 * available -- most of those stages have nothing to decide, and the stage
 * round trip, the common table expressions and the executor's per-row
 * work cost several times the writes themselves.  This writer does that
 * campaign in one pass over the audience, in customer order:
 *
 *	- the audience (customer, occurrence) pairs are sorted and made
 *	  distinct; each is looked up in the publication log's primary key
 *	  (already_offered: counted, not logged, as the statements do) and in
 *	  loyalty.consent's primary key (granted is not true: no_consent,
 *	  logged in loyalty.campaign_filtered by one upsert statement, as the
 *	  statements log it);
 *	- every other customer gets a random code of the pattern (coupon_code,
 *	  check characters), and its coupon row, publication row and outbox row
 *	  are written below the executor as COPY writes: the table's NOT NULL
 *	  and CHECK constraints (ExecConstraints), the heap rows in batches
 *	  (table_multi_insert), then an entry in every index for each row
 *	  (ExecInsertIndexTuples: unique checks, partial index predicates).  In
 *	  customer order, the indexes keyed by customer are appended to at
 *	  their right edge;
 *	- one NOTIFY loyalty_outbox, as the outbox's statement trigger sends.
 *
 * A code equal to a stored one (or to another of the run) fails the unique
 * index of loyalty.coupon with unique_violation: the caller runs this in a
 * subtransaction and, on that error, publishes through the statements,
 * which regenerate codes in rounds.  Everything is in the caller's
 * transaction; publishing again finds every customer already offered.
 *
 * Invariants, checked at each call (otherwise it writes nothing and returns
 * NULL, and the caller runs the statements, which behave as before):
 *	- coupon, campaign_publication and outbox are the extension's ordinary
 *	  tables in its schema with exactly the columns it defines (a column
 *	  added by someone else would get no value), identity coupon_id and
 *	  outbox_id, no rule, no row security, no trigger on INSERT but the
 *	  outbox's own outbox_notify (statement level, enabled on origin, the
 *	  session not a replica: this writer sends its NOTIFY), and the current
 *	  role (the extension owner, _publish is SECURITY DEFINER) may insert
 *	  into them and read the two looked-up tables;
 *	- the columns the statements leave to their defaults get the defaults
 *	  the extension defines (uses and reservations 0, holds_cap_unit false,
 *	  voided_at and acked_at NULL, the identities from their sequences);
 *	- the caller holds the publication lock (_publish_lock), so no other
 *	  run publishes meanwhile, and checked the campaign's offer as above.
 * No user-definable object is resolved: tables, indexes, the trigger
 * function and the sequences are found by name in the extension's schema
 * and by catalog dependency; comparisons use the indexes' support
 * functions.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "coupon_code.h"
#include "loyalty_numeric.h"

/* Rows buffered per table and written with one table_multi_insert(). */
#define PUB_BATCH	1000

/* Random codes drawn per CouponRandomBytes() call. */
#define PUBLISH_RANDOM_BATCH 4096

/* Stands for the extension's coupon_code type in the column lists below. */
#define CODE_TYPE	((Oid) 1)

/* A column the writer fills: its name and type. */
typedef struct PubColumn
{
	const char *name;
	Oid			type;
} PubColumn;

enum
{
	CP_ID, CP_CODE, CP_CAMPAIGN, CP_CUSTOMER, CP_MAX_USES, CP_USES, CP_RESERVATIONS,
	CP_CREATED, CP_VOIDED, CP_CAP_UNIT, NCOUPONCOLS
};
static const PubColumn coupon_cols[NCOUPONCOLS] = {
	{"coupon_id", INT8OID}, {"code", CODE_TYPE}, {"campaign_id", INT8OID},
	{"customer_id", TEXTOID}, {"max_uses", INT8OID}, {"uses", INT8OID},
	{"reservations", INT8OID}, {"created_at", TIMESTAMPTZOID},
	{"voided_at", TIMESTAMPTZOID}, {"holds_cap_unit", BOOLOID}
};

enum
{
	PP_CUSTOMER, PP_MC, PP_OCCURRENCE, PP_VARIANT, PP_CHANNEL, PP_PUBLISHED, PP_OFFER_KIND,
	PP_COUPON_CAMPAIGN, PP_CODE, PP_BONUS, PP_POINTS_REF, NPUBCOLS
};
static const PubColumn pub_cols[NPUBCOLS] = {
	{"customer_id", TEXTOID}, {"marketing_campaign_id", INT8OID}, {"occurrence", TEXTOID},
	{"variant", TEXTOID}, {"channel", TEXTOID}, {"published_at", TIMESTAMPTZOID},
	{"offer_kind", TEXTOID}, {"coupon_campaign_id", INT8OID}, {"code", CODE_TYPE},
	{"bonus_points", INT8OID}, {"points_reference", TEXTOID}
};

enum
{
	OP_CUSTOMER, OP_ID, OP_KIND, OP_EVENT_KEY, OP_CHANNEL, OP_PAYLOAD, OP_CREATED, OP_ACKED,
	NOUTBOXCOLS
};
static const PubColumn outbox_cols[NOUTBOXCOLS] = {
	{"customer_id", TEXTOID}, {"outbox_id", INT8OID}, {"kind", TEXTOID},
	{"event_key", TEXTOID}, {"channel", TEXTOID}, {"payload", JSONBOID},
	{"created_at", TIMESTAMPTZOID}, {"acked_at", TIMESTAMPTZOID}
};

/* A table written below the executor. */
typedef struct PubTable
{
	Relation	rel;
	ResultRelInfo *rri;
	TupleTableSlot *slot;		/* the row being filled: slots[nbuf] */
	TupleTableSlot *slots[PUB_BATCH];	/* rows buffered, created on use */
	int			nbuf;
	MemoryContext cxt;			/* where the slots live (the run's) */
	AttrNumber	col[NPUBCOLS];	/* attribute numbers, in the list's order */
	Oid			seq;			/* identity sequence, or InvalidOid */
} PubTable;

/* A primary key looked up per audience member. */
typedef struct PubLookup
{
	Relation	heap;
	Relation	index;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	AttrNumber	granted;		/* consent: the granted column */
} PubLookup;

/* One audience member. */
typedef struct PubMember
{
	text	   *customer;
	text	   *occurrence;
} PubMember;

/* Everything one run has open. */
typedef struct PubState
{
	Oid			nsp;
	Oid			code_type;
	PubTable	coupon;
	PubTable	pub;
	PubTable	outbox;
	PubLookup	offered;		/* campaign_publication_pkey */
	PubLookup	consent;		/* consent_pkey */
	EState	   *estate;
	Snapshot	snapshot;
	CommandId	cid;
} PubState;

/* Bytewise order of two texts, as COLLATE "C" orders them. */
static int
PubTextCmp(text *a, text *b)
{
	int			la = VARSIZE_ANY_EXHDR(a);
	int			lb = VARSIZE_ANY_EXHDR(b);
	int			c = memcmp(VARDATA_ANY(a), VARDATA_ANY(b), Min(la, lb));

	return c != 0 ? c : (la > lb) - (la < lb);
}

/* Order of members: customer, then occurrence, bytewise. */
static int
PubMemberCmp(const void *a, const void *b)
{
	const PubMember *x = a;
	const PubMember *y = b;
	int			c = PubTextCmp(x->customer, y->customer);

	return c != 0 ? c : PubTextCmp(x->occurrence, y->occurrence);
}

/*
 * Whether the table's INSERT triggers allow a write below the executor:
 * none, or (allow_notify) only the outbox's own statement-level
 * outbox_notify, whose NOTIFY the writer then sends itself.
 */
static bool
PubTriggersAllow(PubState *st, Relation rel, bool allow_notify)
{
	TriggerDesc *t = rel->trigdesc;
	Trigger    *trig;
	Oid			fn;

	if (t == NULL)
		return true;
	if (!allow_notify || t->numtriggers != 1)
		return false;
	trig = &t->triggers[0];
	fn = LookupFuncName(list_make2(makeString(pstrdup("loyalty")), makeString(pstrdup("_outbox_notify"))),
						0, NULL, true);
	return OidIsValid(fn) && trig->tgfoid == fn &&
		strcmp(trig->tgname, "outbox_notify") == 0 &&
		trig->tgtype == (TRIGGER_TYPE_INSERT) &&
		trig->tgenabled == TRIGGER_FIRES_ON_ORIGIN &&
		SessionReplicationRole != SESSION_REPLICATION_ROLE_REPLICA &&
		trig->tgnargs == 0 && trig->tgqual == NULL &&
		trig->tgoldtable == NULL && trig->tgnewtable == NULL;
}

/*
 * Open one of the written tables and check it (see the file header):
 * false when the direct write cannot stand in for the statement.
 */
static bool
PubTableOpen(PubState *st, PubTable *w, const char *name, const PubColumn *cols, int ncols,
			 int identity, bool allow_notify)
{
	Oid			relid = get_relname_relid(name, st->nsp);
	TupleDesc	desc;
	int			live = 0;

	if (!OidIsValid(relid))
		return false;
	w->rel = try_relation_open(relid, RowExclusiveLock);
	if (w->rel == NULL)
		return false;
	desc = RelationGetDescr(w->rel);
	if (w->rel->rd_rel->relkind != RELKIND_RELATION || RelationGetNamespace(w->rel) != st->nsp ||
		w->rel->rd_rules != NULL || w->rel->rd_rel->relrowsecurity ||
		pg_class_aclcheck(relid, GetUserId(), ACL_INSERT) != ACLCHECK_OK ||
		!PubTriggersAllow(st, w->rel, allow_notify))
		return false;
	for (int i = 0; i < desc->natts; i++)
		if (!TupleDescAttr(desc, i)->attisdropped)
			live++;
	if (live != ncols)
		return false;
	for (int c = 0; c < ncols; c++)
	{
		Oid			type = cols[c].type == CODE_TYPE ? st->code_type : cols[c].type;
		int			i;

		w->col[c] = InvalidAttrNumber;
		for (i = 0; i < desc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);

			if (!att->attisdropped && strcmp(NameStr(att->attname), cols[c].name) == 0)
			{
				if (att->atttypid == type && att->attgenerated == '\0')
					w->col[c] = att->attnum;
				break;
			}
		}
		if (w->col[c] == InvalidAttrNumber)
			return false;
		if ((c == identity) != (TupleDescAttr(desc, w->col[c] - 1)->attidentity == ATTRIBUTE_IDENTITY_ALWAYS))
			return false;
	}
	if (identity >= 0)
	{
		w->seq = getIdentitySequence_compat(w->rel, w->col[identity], true);
		if (!OidIsValid(w->seq))
			return false;
	}
	return true;
}

/*
 * Open a table's primary key for lookups of its leading columns (named,
 * in index order) and check it; false when it is not the one the
 * extension defines.
 */
static bool
PubLookupOpen(PubState *st, PubLookup *l, const char *table, const char *index,
			  const char *const *cols, int ncols)
{
	Oid			relid = get_relname_relid(table, st->nsp);
	Oid			indexid = get_relname_relid(index, st->nsp);
	Form_pg_index ind;

	if (!OidIsValid(relid) || !OidIsValid(indexid))
		return false;
	l->heap = try_relation_open(relid, AccessShareLock);
	if (l->heap == NULL || l->heap->rd_rel->relkind != RELKIND_RELATION ||
		pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK ||
		l->heap->rd_rel->relrowsecurity)
		return false;
	l->index = try_relation_open(indexid, AccessShareLock);
	if (l->index == NULL || l->index->rd_rel->relkind != RELKIND_INDEX ||
		l->index->rd_rel->relam != BTREE_AM_OID)
		return false;
	ind = l->index->rd_index;
	if (ind->indrelid != relid || !ind->indisvalid || ind->indcheckxmin || !ind->indisunique ||
		ind->indnkeyatts != ncols ||
		!heap_attisnull(l->index->rd_indextuple, Anum_pg_index_indpred, NULL) ||
		!heap_attisnull(l->index->rd_indextuple, Anum_pg_index_indexprs, NULL))
		return false;
	for (int c = 0; c < ncols; c++)
	{
		AttrNumber	att = ind->indkey.values[c];

		if (att <= 0 || strcmp(NameStr(TupleDescAttr(RelationGetDescr(l->heap), att - 1)->attname), cols[c]) != 0)
			return false;
	}
	l->slot = table_slot_create(l->heap, NULL);
	return true;
}

/* Close a lookup (the locks stay until the end of the transaction). */
static void
PubLookupClose(PubLookup *l)
{
	if (l->scan != NULL)
		index_endscan(l->scan);
	if (l->slot != NULL)
		ExecDropSingleTupleTableSlot(l->slot);
	if (l->index != NULL)
		relation_close(l->index, NoLock);
	if (l->heap != NULL)
		relation_close(l->heap, NoLock);
}

/*
 * The visible row of a primary key with the given key values (equality
 * procs in index column order), in l->slot; false when there is none.
 */
static bool
PubLookupFetch(PubState *st, PubLookup *l, const Oid *procs, const Datum *values, int n)
{
	ScanKeyData skey[3];

	for (int i = 0; i < n; i++)
		ScanKeyEntryInitialize(&skey[i], 0, i + 1, BTEqualStrategyNumber, InvalidOid,
							   l->index->rd_indcollation[i], procs[i], values[i]);
	if (l->scan == NULL)
		l->scan = index_beginscan_compat(l->heap, l->index, st->snapshot, n, 0);
	index_rescan(l->scan, skey, n, NULL, 0);
	return index_getnext_slot(l->scan, ForwardScanDirection, l->slot);
}

/* Prepare a checked table for writing (its indexes opened). */
static void
PubTableStart(PubState *st, PubTable *w)
{
	w->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(w->rri, w->rel, 0, NULL, 0);
	ExecOpenIndices(w->rri, false);
	w->cxt = CurrentMemoryContext;
}

/* Release a written table (the locks stay). */
static void
PubTableClose(PubTable *w)
{
	if (w->rri != NULL)
	{
		for (int i = 0; i < PUB_BATCH && w->slots[i] != NULL; i++)
			ExecDropSingleTupleTableSlot(w->slots[i]);
		ExecCloseIndices(w->rri);
	}
	if (w->rel != NULL)
		relation_close(w->rel, NoLock);
}

/*
 * Write the buffered rows as the executor's INSERT does, COPY's way: the
 * heap rows of the batch at once (table_multi_insert: one WAL record per
 * page), then an entry in every index for each (unique checks, partial
 * index predicates).
 */
static void
PubTableFlush(PubState *st, PubTable *w)
{
	if (w->nbuf == 0)
		return;
	table_multi_insert(w->rel, w->slots, w->nbuf, st->cid, 0, NULL);
	for (int i = 0; i < w->nbuf; i++)
	{
		if (w->rri->ri_NumIndices > 0)
			list_free(LoyaltyExecInsertIndexTuples(w->rri, w->slots[i], st->estate, true));
		ResetPerTupleExprContext(st->estate);
		ExecClearTuple(w->slots[i]);
	}
	w->nbuf = 0;
}

/*
 * Add the filled row to the table's batch: its NOT NULL and CHECK
 * constraints checked now, its values copied into the slot.
 */
static void
PubTableAdd(PubState *st, PubTable *w)
{
	ExecStoreVirtualTuple(w->slot);
	if (w->rel->rd_att->constr != NULL)
		ExecConstraints(w->rri, w->slot, st->estate);
	ExecMaterializeSlot(w->slot);
	ResetPerTupleExprContext(st->estate);
	w->nbuf++;
}

/* Start filling the next row of the table's batch, all columns NULL. */
static void
PubTableClear(PubTable *w)
{
	int			natts = RelationGetDescr(w->rel)->natts;

	Assert(w->nbuf < PUB_BATCH);
	if (w->slots[w->nbuf] == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(w->cxt);

		w->slots[w->nbuf] = table_slot_create(w->rel, NULL);
		MemoryContextSwitchTo(old);
	}
	w->slot = w->slots[w->nbuf];
	ExecClearTuple(w->slot);
	memset(w->slot->tts_isnull, true, sizeof(bool) * natts);
}

#define PUBSET(w, c, v) \
	((w)->slot->tts_values[(w)->col[c] - 1] = (v), (w)->slot->tts_isnull[(w)->col[c] - 1] = false)

/*
 * Open everything (see the file header); false, with whatever was opened
 * left for PubClose, when an invariant does not hold.
 */
static bool
PubOpen(PubState *st)
{
	static const char *const pub_key[3] = {"customer_id", "marketing_campaign_id", "occurrence"};
	static const char *const consent_key[2] = {"customer_id", "channel"};
	Oid			coupon_relid;
	AttrNumber	att;
	HeapTuple	typtup;
	bool		ok;

	st->nsp = get_namespace_oid("loyalty", true);
	if (ExecutorCheckPerms_hook != NULL || !OidIsValid(st->nsp))
		return false;
	/* the coupon_code type: loyalty.coupon's code column, the extension's type */
	coupon_relid = get_relname_relid("coupon", st->nsp);
	if (!OidIsValid(coupon_relid) || (att = get_attnum(coupon_relid, "code")) == InvalidAttrNumber)
		return false;
	st->code_type = get_atttype(coupon_relid, att);
	typtup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(st->code_type));
	if (!HeapTupleIsValid(typtup))
		return false;
	ok = ((Form_pg_type) GETSTRUCT(typtup))->typnamespace == st->nsp &&
		strcmp(NameStr(((Form_pg_type) GETSTRUCT(typtup))->typname), "coupon_code") == 0;
	ReleaseSysCache(typtup);
	if (!ok)
		return false;
	if (!PubTableOpen(st, &st->coupon, "coupon", coupon_cols, NCOUPONCOLS, CP_ID, false) ||
		!PubTableOpen(st, &st->pub, "campaign_publication", pub_cols, NPUBCOLS, -1, false) ||
		!PubTableOpen(st, &st->outbox, "outbox", outbox_cols, NOUTBOXCOLS, OP_ID, true))
		return false;
	if (!PubLookupOpen(st, &st->offered, "campaign_publication", "campaign_publication_pkey", pub_key, 3) ||
		!PubLookupOpen(st, &st->consent, "consent", "consent_pkey", consent_key, 2))
		return false;
	st->consent.granted = get_attnum(RelationGetRelid(st->consent.heap), "granted");
	return st->consent.granted != InvalidAttrNumber &&
		get_atttype(RelationGetRelid(st->consent.heap), st->consent.granted) == BOOLOID;
}

/* Close what PubOpen opened. */
static void
PubClose(PubState *st)
{
	PubLookupClose(&st->offered);
	PubLookupClose(&st->consent);
	PubTableClose(&st->coupon);
	PubTableClose(&st->pub);
	PubTableClose(&st->outbox);
	if (st->estate != NULL)
		FreeExecutorState(st->estate);
}

/*
 * The outbox payload of an offered code, as the statements build it with
 * jsonb_build_object: marketing_campaign_id, occurrence, variant (null
 * without an experiment), offer_kind 'code' and the code's display text.
 */
static Jsonb *
PubPayload(int64 mc, text *occurrence, const char *code, int codelen)
{
	JsonbParseState *ps = NULL;
	JsonbValue	k,
				v;

#define PUBKEY(s) (k.type = jbvString, k.val.string.val = (s), k.val.string.len = strlen(s), \
				   pushJsonbValue(&ps, WJB_KEY, &k))
	pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	PUBKEY("marketing_campaign_id");
	v.type = jbvNumeric;
	v.val.numeric = LoyaltyNumericFromInt64(mc);
	pushJsonbValue(&ps, WJB_VALUE, &v);
	PUBKEY("occurrence");
	v.type = jbvString;
	v.val.string.val = VARDATA_ANY(occurrence);
	v.val.string.len = VARSIZE_ANY_EXHDR(occurrence);
	pushJsonbValue(&ps, WJB_VALUE, &v);
	PUBKEY("variant");
	v.type = jbvNull;
	pushJsonbValue(&ps, WJB_VALUE, &v);
	PUBKEY("offer_kind");
	v.type = jbvString;
	v.val.string.val = "code";
	v.val.string.len = 4;
	pushJsonbValue(&ps, WJB_VALUE, &v);
	PUBKEY("code");
	v.type = jbvString;
	v.val.string.val = (char *) code;
	v.val.string.len = codelen;
	pushJsonbValue(&ps, WJB_VALUE, &v);
#undef PUBKEY
	return JsonbValueToJsonb(pushJsonbValue(&ps, WJB_END_OBJECT, NULL));
}

/* What one run publishes: the campaign's constants. */
typedef struct PubOffer
{
	int64		mc;
	int64		coupon_campaign;
	Datum		channel;
	TimestampTz as_of;
	CouponPattern pattern;
	uint8	   *random;
	int			nready;
	int			next;
} PubOffer;

/* A fresh random code of the offer's pattern. */
static CouponCode *
PubNextCode(PubOffer *o)
{
	CouponCodeValue v;

	if (o->nready == 0)
	{
		CouponRandomBytes(o->random, (size_t) PUBLISH_RANDOM_BATCH * o->pattern.nrandom);
		o->nready = PUBLISH_RANDOM_BATCH;
		o->next = 0;
	}
	CouponCodeFromRandom(&o->pattern, o->random + (Size) o->next * o->pattern.nrandom, &v);
	o->next++;
	o->nready--;
	return CouponCodeFromValue(&v);
}

/* Write the three tables' batches, in the statements' order. */
static void
PubFlushAll(PubState *st)
{
	PubTableFlush(st, &st->coupon);
	PubTableFlush(st, &st->pub);
	PubTableFlush(st, &st->outbox);
}

/* Add one member's coupon, publication and outbox rows to the batches. */
static void
PubWriteMember(PubState *st, PubOffer *o, PubMember *m)
{
	CouponCode *code = PubNextCode(o);
	Datum		codeval = PointerGetDatum(code);
	Datum		customer = PointerGetDatum(m->customer);
	Datum		occurrence = PointerGetDatum(m->occurrence);
	Datum		at = TimestampTzGetDatum(o->as_of);
	char	   *key;

	PubTableClear(&st->coupon);
	PUBSET(&st->coupon, CP_ID, Int64GetDatum(nextval_internal(st->coupon.seq, false)));
	PUBSET(&st->coupon, CP_CODE, codeval);
	PUBSET(&st->coupon, CP_CAMPAIGN, Int64GetDatum(o->coupon_campaign));
	PUBSET(&st->coupon, CP_CUSTOMER, customer);
	PUBSET(&st->coupon, CP_MAX_USES, Int64GetDatum(1));
	PUBSET(&st->coupon, CP_USES, Int64GetDatum(0));
	PUBSET(&st->coupon, CP_RESERVATIONS, Int64GetDatum(0));
	PUBSET(&st->coupon, CP_CREATED, at);
	PUBSET(&st->coupon, CP_CAP_UNIT, BoolGetDatum(false));
	PubTableAdd(st, &st->coupon);

	PubTableClear(&st->pub);
	PUBSET(&st->pub, PP_CUSTOMER, customer);
	PUBSET(&st->pub, PP_MC, Int64GetDatum(o->mc));
	PUBSET(&st->pub, PP_OCCURRENCE, occurrence);
	PUBSET(&st->pub, PP_CHANNEL, o->channel);
	PUBSET(&st->pub, PP_PUBLISHED, at);
	PUBSET(&st->pub, PP_OFFER_KIND, CStringGetTextDatum("code"));
	PUBSET(&st->pub, PP_COUPON_CAMPAIGN, Int64GetDatum(o->coupon_campaign));
	PUBSET(&st->pub, PP_CODE, codeval);
	PubTableAdd(st, &st->pub);

	key = psprintf(INT64_FORMAT ":%.*s", o->mc, (int) VARSIZE_ANY_EXHDR(m->occurrence),
				   VARDATA_ANY(m->occurrence));
	PubTableClear(&st->outbox);
	PUBSET(&st->outbox, OP_CUSTOMER, customer);
	PUBSET(&st->outbox, OP_ID, Int64GetDatum(nextval_internal(st->outbox.seq, false)));
	PUBSET(&st->outbox, OP_KIND, CStringGetTextDatum("offer"));
	PUBSET(&st->outbox, OP_EVENT_KEY, CStringGetTextDatum(key));
	PUBSET(&st->outbox, OP_CHANNEL, o->channel);
	PUBSET(&st->outbox, OP_PAYLOAD,
		   JsonbPGetDatum(PubPayload(o->mc, m->occurrence, CouponCodeDisplay(code), CouponCodeDisplayLen(code))));
	PUBSET(&st->outbox, OP_CREATED, at);
	PubTableAdd(st, &st->outbox);
}

/*
 * Whether the campaign published anything yet: a first run skips the
 * publication log lookups (nothing to find; the caller holds the
 * publication lock, so nothing appears meanwhile).
 */
static bool
PubCampaignPublished(int64 mc)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(mc)};
	bool		found;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("SELECT 1 FROM loyalty.campaign_publication"
							  " WHERE marketing_campaign_id OPERATOR(pg_catalog.=) $1 LIMIT 1",
							  1, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "reading the publication log failed");
	found = SPI_processed > 0;
	SPI_finish();
	return found;
}

/*
 * Log the no-consent members in loyalty.campaign_filtered with the
 * statements' upsert: a row per (customer, campaign, occurrence), its
 * reason and time changed only when the reason changed.
 */
static void
PubLogFiltered(int64 mc, TimestampTz as_of, Datum *customers, Datum *occurrences, int n)
{
	Oid			types[4] = {INT8OID, TIMESTAMPTZOID, TEXTARRAYOID, TEXTARRAYOID};
	Datum		values[4];

	if (n == 0)
		return;
	values[0] = Int64GetDatum(mc);
	values[1] = TimestampTzGetDatum(as_of);
	values[2] = PointerGetDatum(construct_array(customers, n, TEXTOID, -1, false, TYPALIGN_INT));
	values[3] = PointerGetDatum(construct_array(occurrences, n, TEXTOID, -1, false, TYPALIGN_INT));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args(
							  "INSERT INTO loyalty.campaign_filtered AS f (customer_id, marketing_campaign_id, occurrence,"
							  " reason, variant, filtered_at)"
							  " SELECT u.c, $1, u.o, 'no_consent', NULL, $2"
							  " FROM ROWS FROM (pg_catalog.unnest($3), pg_catalog.unnest($4)) AS u(c, o)"
							  " ON CONFLICT ON CONSTRAINT campaign_filtered_pkey DO UPDATE"
							  " SET reason = excluded.reason, variant = excluded.variant, filtered_at = excluded.filtered_at"
							  " WHERE f.reason OPERATOR(pg_catalog.<>) excluded.reason",
							  4, types, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "logging the filtered customers failed");
	SPI_finish();
}

/*
 * Sort the audience (customers, occurrences: '' when NULL) into members,
 * distinct, without NULL customers.
 */
static PubMember *
PubMembers(ArrayType *customers, ArrayType *occurrences, int *nmembers)
{
	Datum	   *cust,
			   *occ = NULL;
	bool	   *custnull,
			   *occnull = NULL;
	int			n,
				nocc = 0,
				k = 0;
	PubMember  *m;
	text	   *empty = cstring_to_text("");

	deconstruct_array(customers, TEXTOID, -1, false, TYPALIGN_INT, &cust, &custnull, &n);
	if (occurrences != NULL)
		deconstruct_array(occurrences, TEXTOID, -1, false, TYPALIGN_INT, &occ, &occnull, &nocc);
	if (occurrences != NULL && nocc != n)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("customers and occurrences must have the same length"),
				 errdetail("There are %d customers and %d occurrences.", n, nocc)));
	m = palloc(sizeof(PubMember) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		if (custnull[i])
			continue;
		m[k].customer = DatumGetTextPP(cust[i]);
		m[k].occurrence = occ == NULL || occnull[i] ? empty : DatumGetTextPP(occ[i]);
		k++;
	}
	qsort(m, k, sizeof(PubMember), PubMemberCmp);
	n = k;
	k = 0;
	for (int i = 0; i < n; i++)
		if (k == 0 || PubMemberCmp(&m[k - 1], &m[i]) != 0)
			m[k++] = m[i];
	*nmembers = k;
	return m;
}

PG_FUNCTION_INFO_V1(campaign_publish_codes_direct);

/*
 * loyalty._publish_codes_direct(marketing_campaign_id bigint,
 *	   coupon_campaign_id bigint, code_pattern text, channel text,
 *	   as_of timestamptz, customers text[], occurrences text[])
 *	   RETURNS bigint[]
 * The one-pass publication (see the file header) of a code campaign's
 * audience; occurrences NULL: '' for every customer.  Returns {published,
 * already_offered, no_consent}, or NULL (nothing done) when the tables are
 * not as the writer needs them.
 */
Datum
campaign_publish_codes_direct(PG_FUNCTION_ARGS)
{
	PubState	st;
	PubOffer	o;
	PubMember  *members;
	int			n;
	int64		counts[3] = {0, 0, 0};
	Datum		result[3];
	Datum	   *fcust,
			   *focc;
	int			nfiltered = 0;
	bool	   *publish;
	bool		published_before;
	char	   *pattern;
	CouponCodeError err;
	MemoryContext rowcxt,
				old;
	static const Oid pub_procs[3] = {F_TEXTEQ, F_INT8EQ, F_TEXTEQ};
	static const Oid consent_procs[2] = {F_TEXTEQ, F_TEXTEQ};

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3) ||
		PG_ARGISNULL(4) || PG_ARGISNULL(5))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("only occurrences may be null"),
				 errdetail("The campaign, its offer, the time and the customers are required.")));
	memset(&o, 0, sizeof(o));
	o.mc = PG_GETARG_INT64(0);
	o.coupon_campaign = PG_GETARG_INT64(1);
	pattern = text_to_cstring(PG_GETARG_TEXT_PP(2));
	o.channel = PointerGetDatum(PG_GETARG_TEXT_PP(3));
	o.as_of = PG_GETARG_TIMESTAMPTZ(4);
	if (!CouponPatternParse(pattern, strlen(pattern), &o.pattern, &err))
		CouponPatternReportError(pattern, &err);

	memset(&st, 0, sizeof(st));
	if (!PubOpen(&st))
	{
		PubClose(&st);
		PG_RETURN_NULL();
	}
	members = PubMembers(PG_GETARG_ARRAYTYPE_P(5), PG_ARGISNULL(6) ? NULL : PG_GETARG_ARRAYTYPE_P(6), &n);
	fcust = palloc(sizeof(Datum) * Max(n, 1));
	focc = palloc(sizeof(Datum) * Max(n, 1));
	publish = palloc(sizeof(bool) * Max(n, 1));
	published_before = PubCampaignPublished(o.mc);
	st.snapshot = RegisterSnapshot(GetActiveSnapshot());

	/* classify: already offered, no consent, else published */
	for (int i = 0; i < n; i++)
	{
		Datum		pkey[3];
		bool		isnull;

		CHECK_FOR_INTERRUPTS();
		publish[i] = false;
		pkey[0] = PointerGetDatum(members[i].customer);
		pkey[1] = Int64GetDatum(o.mc);
		pkey[2] = PointerGetDatum(members[i].occurrence);
		if (published_before && PubLookupFetch(&st, &st.offered, pub_procs, pkey, 3))
		{
			counts[1]++;
			continue;
		}
		pkey[1] = o.channel;
		if (!PubLookupFetch(&st, &st.consent, consent_procs, pkey, 2) ||
			!DatumGetBool(slot_getattr(st.consent.slot, st.consent.granted, &isnull)) || isnull)
		{
			fcust[nfiltered] = pkey[0];
			focc[nfiltered++] = pkey[2];
			counts[2]++;
			continue;
		}
		publish[i] = true;
		counts[0]++;
	}
	if (!CouponPatternAllowsCount(&o.pattern, counts[0], &err))
		CouponPatternReportError(pattern, &err);
	o.random = palloc((Size) PUBLISH_RANDOM_BATCH * o.pattern.nrandom);

	/* write, in customer order */
	st.estate = CreateExecutorState();
	PubTableStart(&st, &st.coupon);
	PubTableStart(&st, &st.pub);
	PubTableStart(&st, &st.outbox);
	st.cid = GetCurrentCommandId(true);
	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "publish row", ALLOCSET_DEFAULT_SIZES);
	for (int i = 0; i < n; i++)
	{
		if (!publish[i])
			continue;
		CHECK_FOR_INTERRUPTS();
		old = MemoryContextSwitchTo(rowcxt);
		PubWriteMember(&st, &o, &members[i]);
		MemoryContextSwitchTo(old);
		MemoryContextReset(rowcxt);
		if (st.coupon.nbuf == PUB_BATCH)
			PubFlushAll(&st);
	}
	PubFlushAll(&st);

	UnregisterSnapshot(st.snapshot);
	PubClose(&st);
	if (counts[0] > 0)
		Async_Notify("loyalty_outbox", "");
	/* later commands (the log's upsert included) see the writes */
	CommandCounterIncrement();
	PubLogFiltered(o.mc, o.as_of, fcust, focc, nfiltered);
	for (int i = 0; i < 3; i++)
		result[i] = Int64GetDatum(counts[i]);
	PG_RETURN_ARRAYTYPE_P(construct_array(result, 3, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}
