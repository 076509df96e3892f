/*
 * rfm_segmentation.c
 *		loyalty.rfm_segmentation(): score and segment every customer of an
 *		orders table or view in one call.
 *
 * One sequential pass over (customer, time, amount), run through SPI with the
 * caller's rights and snapshot, feeds a C hash table keyed by customer: per
 * customer only the last order, the orders in the window and the spend in the
 * window are kept, inline in the 40-byte hash entry (plus the key's bytes for
 * by-reference key types), so memory grows with customers, never with
 * orders, and a row costs one cache miss in the table.  Rows reach the table
 * through a DestReceiver, without being copied.  Then every customer is
 * scored at once (RfmScoreAll), named (RfmSegmentOf) and returned through a
 * tuplestore.
 *
 * The per-row path allocates nothing: the key is hashed in its binary form
 * (integers, text and uuid directly, any other type through its hash
 * opclass), amounts are added as scaled 64-bit integers (a customer's sum
 * moves to rfm_money.c's RfmMoney only if it overflows, changes kind or meets
 * a huge amount) and the key is turned into text once per customer, at the
 * end.
 */
#include "rfm_stats.h"
#include "rfm_args.h"

#include "access/htup_details.h"
#include "catalog/pg_class.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_statistic.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "common/int.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/params.h"
#include "rfm.h"
#include "segment.h"
#include "storage/lmgr.h"
#include "tcop/dest.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"

/* How customer keys are hashed and compared. */
typedef enum RfmKeyKind
{
	RFM_KEY_INT,				/* int2, int4, int8, oid: the Datum itself */
	RFM_KEY_VARLENA,			/* text, varchar (deterministic), bytea: bytes */
	RFM_KEY_UUID,				/* 16 bytes */
	RFM_KEY_GENERIC				/* the type's hash opclass and equality */
} RfmKeyKind;

/*
 * What frequency counts: rows (every order row), distinct order ids of the
 * customer (order_column) or distinct days (program zone) with an order.
 */
typedef enum RfmFrequencyUnit
{
	RFM_COUNT_ROWS,
	RFM_COUNT_ORDERS,
	RFM_COUNT_DAYS
} RfmFrequencyUnit;

/*
 * Key of the set of orders or days already counted: the customer's key
 * (the arena copy's address or the by-value Datum: one per customer), then
 * the order id as text or the day.  Order ids longer than this are refused.
 */
#define RFM_SEEN_ID_LEN		120
typedef struct RfmSeenKey
{
	Datum		cust;
	int32		day;
	char		id[RFM_SEEN_ID_LEN];
} RfmSeenKey;

/* How RfmCustomer holds its spend in the window. */
typedef enum RfmSumKind
{
	RFM_SUM_INT64 = 0,			/* sum.i: spend * 10^scale (zeroed: 0) */
	RFM_SUM_FLOAT = 1,			/* sum.f: double precision amounts */
	RFM_SUM_MONEY = 2			/* sum.money: overflow or mixed, exact */
} RfmSumKind;

/*
 * One customer: hash table entry and running statistics (what the output
 * needs, nothing more).  Entries move when the table grows: nothing keeps a
 * pointer to one across an insertion.
 */
typedef struct RfmCustomer
{
	Datum		key;			/* owned copy of the customer key */
	TimestampTz last_order;		/* RFM_NO_LAST_ORDER when none */
	int64		frequency;		/* orders in the window */
	union
	{
		int64		i;
		double		f;
		RfmMoney   *money;
	}			sum;			/* amounts in the window, see RfmSumKind */
	int16		scale;			/* RFM_SUM_INT64: display scale */
	uint8		sum_kind;		/* RfmSumKind */
	char		status;			/* simplehash */
} RfmCustomer;

/* Keys of by-reference types are copied into blocks of this size. */
#define RFM_KEY_BLOCK_SIZE	(64 * 1024)

struct RfmScan;

static inline uint32 RfmKeyHash(struct RfmScan *scan, Datum key);
static inline bool RfmKeyEqual(struct RfmScan *scan, Datum a, Datum b);

#define SH_PREFIX			rfmcust
#define SH_ELEMENT_TYPE		RfmCustomer
#define SH_KEY_TYPE			Datum
#define SH_KEY				key
#define SH_HASH_KEY(tb, k)	RfmKeyHash((struct RfmScan *) (tb)->private_data, k)
#define SH_EQUAL(tb, a, b)	RfmKeyEqual((struct RfmScan *) (tb)->private_data, a, b)
#define SH_SCOPE			static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

/* The DestReceiver that aggregates the scanned rows. */
typedef struct RfmScan
{
	DestReceiver pub;			/* must be first */

	/* input description */
	Oid			coltypes[3];	/* declared types of the three columns */
	RfmKeyKind key_kind;
	int16		key_typlen;
	bool		key_byval;
	Oid			key_collation;
	FmgrInfo	key_hash_fn;	/* RFM_KEY_GENERIC */
	FmgrInfo	key_eq_fn;		/* RFM_KEY_GENERIC */
	LoyaltyTimeKind time_kind;
	LoyaltyAmountKind amount_kind;
	RfmPeriod	period;
	struct pg_tz *tz;			/* program zone (NULL: UTC) */
	RfmFrequencyUnit unit;		/* what frequency counts */
	int			natts;			/* columns scanned: 3, or 4 with the order id */
	LoyaltyAmountKind sum_kind; /* pushed-down aggregation: type of the sums */
	HTAB	   *seen;			/* orders / days counted (unit not rows) */

	/* rows ignored, reported by a NOTICE */
	uint64		no_customer;
	uint64		no_time;

	/* results */
	MemoryContext cxt;			/* hash table, keys, overflowed sums */
	MemoryContext rowcxt;		/* scratch, reset per row */
	rfmcust_hash *table;
	uint64		nrows;
	RfmCustomer *recent;		/* customer of the previous row */

	/* key arena */
	char	   *arena;
	Size		arena_left;
} RfmScan;

/* murmur3's 64-bit finalizer: a fast, well-mixed hash of an integer key. */
static inline uint32
RfmHashInt64(uint64 k)
{
	k ^= k >> 33;
	k *= UINT64CONST(0xff51afd7ed558ccd);
	k ^= k >> 33;
	k *= UINT64CONST(0xc4ceb9fe1a85ec53);
	k ^= k >> 33;
	return (uint32) k;
}

/* Hash of a customer key (the kinds are chosen in RfmChooseKeyKind). */
static inline uint32
RfmKeyHash(RfmScan *scan, Datum key)
{
	switch (scan->key_kind)
	{
		case RFM_KEY_INT:
			return RfmHashInt64((uint64) key);
		case RFM_KEY_VARLENA:
			return hash_bytes((const unsigned char *) VARDATA_ANY(DatumGetPointer(key)),
							  VARSIZE_ANY_EXHDR(DatumGetPointer(key)));
		case RFM_KEY_UUID:
			return hash_bytes((const unsigned char *) DatumGetPointer(key), 16);
		case RFM_KEY_GENERIC:
			return DatumGetUInt32(FunctionCall1Coll(&scan->key_hash_fn,
													scan->key_collation, key));
	}
	return 0;
}

/* Equality of two customer keys, consistent with RfmKeyHash. */
static inline bool
RfmKeyEqual(RfmScan *scan, Datum a, Datum b)
{
	switch (scan->key_kind)
	{
		case RFM_KEY_INT:
			return a == b;
		case RFM_KEY_VARLENA:
			{
				Size		la = VARSIZE_ANY_EXHDR(DatumGetPointer(a));

				return la == VARSIZE_ANY_EXHDR(DatumGetPointer(b)) &&
					memcmp(VARDATA_ANY(DatumGetPointer(a)),
						   VARDATA_ANY(DatumGetPointer(b)), la) == 0;
			}
		case RFM_KEY_UUID:
			return memcmp(DatumGetPointer(a), DatumGetPointer(b), 16) == 0;
		case RFM_KEY_GENERIC:
			return DatumGetBool(FunctionCall2Coll(&scan->key_eq_fn,
												  scan->key_collation, a, b));
	}
	return false;
}

/*
 * Copy a new customer's key into the arena (by-reference types), so that it
 * outlives the scanned buffer page.  Keys are carved out of 64 kB blocks:
 * no allocation header per customer.
 */
static Datum
RfmKeyCopy(RfmScan *scan, Datum key)
{
	Size		len;
	char	   *dst;

	if (scan->key_byval)
		return key;
	len = scan->key_typlen == -1 ? VARSIZE_ANY(DatumGetPointer(key))
		: (Size) datumGetSize(key, false, scan->key_typlen);
	if (len > RFM_KEY_BLOCK_SIZE / 8)
		dst = MemoryContextAlloc(scan->cxt, len);
	else
	{
		Size		need = MAXALIGN(len);

		if (need > scan->arena_left)
		{
			scan->arena = MemoryContextAlloc(scan->cxt, RFM_KEY_BLOCK_SIZE);
			scan->arena_left = RFM_KEY_BLOCK_SIZE;
		}
		dst = scan->arena;
		scan->arena += need;
		scan->arena_left -= need;
	}
	memcpy(dst, DatumGetPointer(key), len);
	return PointerGetDatum(dst);
}

/*
 * The customer's entry in the scan's table, created empty (no order yet)
 * the first time its key is seen.  An insertion may move other entries.
 */
static inline RfmCustomer *
RfmCustomerEnter(RfmScan *scan, Datum key)
{
	bool		found;
	RfmCustomer *c = rfmcust_insert(scan->table, key, &found);

	if (!found)
	{
		c->key = RfmKeyCopy(scan, key);
		c->last_order = RFM_NO_LAST_ORDER;
		c->frequency = 0;
		c->sum.i = 0;
		c->scale = 0;
		c->sum_kind = RFM_SUM_INT64;
	}
	return c;
}

/* A customer's sum as an RfmMoney (a copy, or the overflowed one). */
static void
RfmCustomerSum(const RfmCustomer *c, RfmMoney *out)
{
	memset(out, 0, sizeof(RfmMoney));
	switch ((RfmSumKind) c->sum_kind)
	{
		case RFM_SUM_INT64:
			out->kind = RFM_MONEY_INT;
			out->v.i = c->sum.i;
			out->scale = c->scale;
			break;
		case RFM_SUM_FLOAT:
			out->kind = RFM_MONEY_FLOAT;
			out->v.f = c->sum.f;
			break;
		case RFM_SUM_MONEY:
			*out = *c->sum.money;
			break;
	}
}

/*
 * Add an amount the inline fast path could not take: rescale the 64-bit sum
 * if that fits, start a double sum for float amounts, else move the sum to an
 * RfmMoney (exact, 128-bit or numeric) allocated in the scan's context.
 */
static void
RfmCustomerAddSlow(RfmScan *scan, RfmCustomer *c, const RfmAmount *a)
{
	if (c->sum_kind == RFM_SUM_INT64 && !a->is_big && !a->is_float &&
		a->i >= PG_INT64_MIN && a->i <= PG_INT64_MAX &&
		a->scale <= 18 && c->scale <= 18)
	{
		int64		sum = c->sum.i;
		int64		add = (int64) a->i;
		int16		scale = Max(c->scale, a->scale);

		if (!pg_mul_s64_overflow(sum, RfmPow10Int64[scale - c->scale], &sum) &&
			!pg_mul_s64_overflow(add, RfmPow10Int64[scale - a->scale], &add) &&
			!pg_add_s64_overflow(sum, add, &sum))
		{
			c->sum.i = sum;
			c->scale = scale;
			return;
		}
	}
	if (a->is_float && c->sum_kind == RFM_SUM_INT64 &&
		c->sum.i == 0 && c->scale == 0)
	{
		c->sum_kind = RFM_SUM_FLOAT;
		c->sum.f = a->f;
		return;
	}
	if (a->is_float && c->sum_kind == RFM_SUM_FLOAT)
	{
		c->sum.f += a->f;
		return;
	}
	if (c->sum_kind != RFM_SUM_MONEY)
	{
		RfmMoney   *money = MemoryContextAlloc(scan->cxt, sizeof(RfmMoney));

		RfmCustomerSum(c, money);
		c->sum.money = money;
		c->sum_kind = RFM_SUM_MONEY;
	}
	RfmMoneyAdd(c->sum.money, a, scan->cxt);
}

/*
 * sum += amount: one 64-bit addition in the common case.  (The overflow
 * builtins store the wrapped result: add into a local, keep it on success.)
 */
static inline void
RfmCustomerAdd(RfmScan *scan, RfmCustomer *c, const RfmAmount *a)
{
	int64		sum;

	if (a->isnull)
		return;
	if (likely(c->sum_kind == RFM_SUM_INT64 && !a->is_big && !a->is_float &&
			   a->scale == c->scale &&
			   a->i >= PG_INT64_MIN && a->i <= PG_INT64_MAX &&
			   !pg_add_s64_overflow(c->sum.i, (int64) a->i, &sum)))
	{
		c->sum.i = sum;
		return;
	}
	RfmCustomerAddSlow(scan, c, a);
}

/*
 * DestReceiver startup: the rows must have the column types validated
 * beforehand (the relation is locked since, so this is a safety net: a
 * Datum of another type must never reach the decoders).
 */
static void
RfmScanStartup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
	RfmScan    *scan = (RfmScan *) self;
	int			k;

	if (typeinfo->natts != scan->natts)
		elog(ERROR, "rfm_segmentation: the scan returns %d columns, not %d",
			 typeinfo->natts, scan->natts);
	for (k = 0; k < 3; k++)
		if (TupleDescAttr(typeinfo, k)->atttypid != scan->coltypes[k])
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the orders relation changed while rfm_segmentation read it")));
}

/*
 * Whether an order row in the window adds to the customer's frequency: always
 * when rows are counted; the first time its order id (a row without one is
 * an order of its own) or its day is seen for this customer otherwise.
 */
static bool
RfmScanNewOrder(RfmScan *scan, RfmCustomer *c, TupleTableSlot *slot, TimestampTz t)
{
	RfmSeenKey	k;
	bool		found;

	if (scan->unit == RFM_COUNT_ROWS)
		return true;
	memset(&k, 0, sizeof(k));
	k.cust = c->key;
	if (scan->unit == RFM_COUNT_DAYS)
		k.day = (int32) RfmZoneDay(t, scan->tz);
	else
	{
		text	   *id;
		int			len;

		if (slot->tts_isnull[3])
			return true;
		id = DatumGetTextPP(slot->tts_values[3]);
		len = VARSIZE_ANY_EXHDR(id);
		if (len >= RFM_SEEN_ID_LEN)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("order id too long: %d bytes", len),
					 errdetail("Distinct orders are counted for order ids of at most %d bytes in their text form.",
							   RFM_SEEN_ID_LEN - 1)));
		memcpy(k.id, VARDATA_ANY(id), len);
	}
	(void) hash_search(scan->seen, &k, HASH_ENTER, &found);
	return !found;
}

/*
 * One order row (customer, time, amount): apply rfm.h's rules and update the
 * customer's statistics.  Rows without customer or time, with an infinite
 * time or dated after as_of are skipped.
 */
static bool
RfmScanReceive(TupleTableSlot *slot, DestReceiver *self)
{
	RfmScan    *scan = (RfmScan *) self;
	Datum		key;
	TimestampTz t;
	RfmAmount	amount;
	RfmCustomer *c;
	MemoryContext old;

	slot_getsomeattrs(slot, scan->natts);
	if (slot->tts_isnull[0] || slot->tts_isnull[1])
	{
		if (slot->tts_isnull[0])
			scan->no_customer++;
		else
			scan->no_time++;
		return true;
	}

	old = MemoryContextSwitchTo(scan->rowcxt);
	if (!RfmDecodeTime(scan->time_kind, slot->tts_values[1], scan->tz, &t))
	{
		scan->no_time++;		/* infinite: not a dated order */
		MemoryContextSwitchTo(old);
		return true;
	}
	if (t > scan->period.as_of)
	{
		MemoryContextSwitchTo(old);
		return true;
	}
	if (slot->tts_isnull[2])
	{
		amount.isnull = true;
		amount.negative = false;
	}
	else
		RfmDecodeAmount(scan->amount_kind, slot->tts_values[2], &amount);

	key = slot->tts_values[0];
	if (scan->key_typlen == -1)
		key = PointerGetDatum(pg_detoast_datum_packed((struct varlena *) DatumGetPointer(key)));

	/*
	 * The previous row's entry is still valid: only an insertion moves
	 * entries, and the only insertion since was the one that returned it.
	 */
	c = scan->recent;
	if (c == NULL || !RfmKeyEqual(scan, c->key, key))
	{
		c = RfmCustomerEnter(scan, key);
		scan->recent = c;
	}

	if (t >= scan->period.start)
	{
		if (!amount.negative && RfmScanNewOrder(scan, c, slot, t))
			c->frequency++;
		RfmCustomerAdd(scan, c, &amount);
	}
	if (!amount.negative && t > c->last_order)
		c->last_order = t;
	scan->nrows++;

	MemoryContextSwitchTo(old);
	if (!scan->rowcxt->isReset)
		MemoryContextReset(scan->rowcxt);
	return true;
}

/* DestReceiver shutdown: the results stay in the receiver for the caller. */
static void
RfmScanShutdown(DestReceiver *self)
{
}

/* DestReceiver destroy: the receiver lives on the caller's stack. */
static void
RfmScanDestroy(DestReceiver *self)
{
}

/*
 * Initial size of the customer table: the planner's estimate of distinct
 * customer keys (pg_statistic, as ANALYZE left it), so that the table does
 * not grow, rehash and zero itself ten times on the way.  Without statistics
 * (views, never analyzed tables) it starts small and grows.  Capped so that
 * a wild estimate cannot allocate much more than the real table would.
 */
static uint32
RfmEstimateCustomers(Oid relid, char relkind, AttrNumber attnum)
{
	HeapTuple	tp;
	double		ndistinct = 0;
	double		reltuples = 0;

	tp = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (HeapTupleIsValid(tp))
	{
		reltuples = ((Form_pg_class) GETSTRUCT(tp))->reltuples;
		ReleaseSysCache(tp);
	}
	tp = SearchSysCache3(STATRELATTINH, ObjectIdGetDatum(relid),
						 Int16GetDatum(attnum),
						 BoolGetDatum(relkind == RELKIND_PARTITIONED_TABLE));
	if (HeapTupleIsValid(tp))
	{
		ndistinct = ((Form_pg_statistic) GETSTRUCT(tp))->stadistinct;
		ReleaseSysCache(tp);
	}
	if (ndistinct < 0)
		ndistinct = -ndistinct * Max(reltuples, 0);
	return (uint32) Min(Max(ndistinct, 1024), 64 * 1024 * 1024);
}

/* Name of a relation for messages, schema-qualified. */
static char *
RfmRelationName(Oid relid)
{
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
									  get_rel_name(relid));
}

/*
 * Look up one of the three columns: it must exist and not be a system
 * column.  Returns its type with domains stripped (and sets *declared to the
 * declared type for messages).
 */
static AttrNumber
RfmLookupColumn(Oid relid, const char *param, Name colname, Oid *typid,
				Oid *collation)
{
	AttrNumber	attnum = get_attnum(relid, NameStr(*colname));
	int32		typmod;

	if (attnum == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of relation %s does not exist",
						NameStr(*colname), RfmRelationName(relid)),
				 errdetail("%s must name a column of the orders relation.", param)));
	if (attnum < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
				 errmsg("system column \"%s\" cannot be used as %s",
						NameStr(*colname), param)));
	get_atttypetypmodcoll(relid, attnum, typid, &typmod, collation);
	return attnum;
}

/* Raise the wrong-type error for one column. */
static void
RfmWrongType(Oid relid, Name colname, Oid typid, const char *what,
			 const char *expected)
{
	ereport(ERROR,
			(errcode(ERRCODE_DATATYPE_MISMATCH),
			 errmsg("column \"%s\" of relation %s has type %s, which cannot be used as %s",
					NameStr(*colname), RfmRelationName(relid),
					format_type_be(typid), what),
			 errdetail("%s", expected)));
}

/*
 * Pick how to hash and compare customer keys of this type: binary forms for
 * the common key types (text only under a deterministic collation, where
 * equality is byte equality), the type's hash opclass for anything else.
 */
static void
RfmChooseKeyKind(RfmScan *scan, Oid relid, Name colname, Oid typid,
				 Oid collation)
{
	Oid			base = getBaseType(typid);
	TypeCacheEntry *tce;

	get_typlenbyval(base, &scan->key_typlen, &scan->key_byval);
	scan->key_collation = collation;
	switch (base)
	{
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case OIDOID:
			scan->key_kind = RFM_KEY_INT;
			return;
		case BYTEAOID:
			scan->key_kind = RFM_KEY_VARLENA;
			return;
		case TEXTOID:
		case VARCHAROID:
			if (!OidIsValid(collation) || get_collation_isdeterministic(collation))
			{
				scan->key_kind = RFM_KEY_VARLENA;
				return;
			}
			break;
		case UUIDOID:
			scan->key_kind = RFM_KEY_UUID;
			return;
	}

	tce = lookup_type_cache(typid, TYPECACHE_HASH_PROC_FINFO | TYPECACHE_EQ_OPR_FINFO);
	if (!OidIsValid(tce->hash_proc) || !OidIsValid(tce->eq_opr))
		RfmWrongType(relid, colname, typid, "the customer key",
					 "customer_column must be of a type with equality and a hash operator class (integer, text, uuid, ...).");
	scan->key_kind = RFM_KEY_GENERIC;
	fmgr_info_copy(&scan->key_hash_fn, &tce->hash_proc_finfo, CurrentMemoryContext);
	fmgr_info_copy(&scan->key_eq_fn, &tce->eq_opr_finfo, CurrentMemoryContext);
}

/*
 * Read a threshold array into a scoring specification: one dimension's
 * ascending cut points, bins - 1 of them.  A null array means quantiles for
 * that dimension.
 */
static void
RfmReadThresholds(FunctionCallInfo fcinfo, int argno, RfmDimension dim,
				  const char *param, RfmScoring *scoring)
{
	ArrayType  *arr;
	Oid			elemtype;
	int16		typlen;
	bool		typbyval;
	char		typalign;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;

	if (PG_ARGISNULL(argno))
		return;
	arr = PG_GETARG_ARRAYTYPE_P(argno);
	elemtype = ARR_ELEMTYPE(arr);
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a one-dimensional array", param)));
	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	deconstruct_array(arr, elemtype, typlen, typbyval, typalign,
					  &elems, &nulls, &n);
	if (n != scoring->bins - 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must have bins - 1 = %d elements, not %d",
						param, scoring->bins - 1, n),
				 errdetail("With %d bins, %d ascending cut points separate the scores 1 to %d.",
						   scoring->bins, scoring->bins - 1, scoring->bins)));
	for (i = 0; i < n; i++)
	{
		LoyaltyCheckNoNulls(nulls[i], param);
		switch (elemtype)
		{
			case INT4OID:
				scoring->thresholds[dim][i] = DatumGetInt32(elems[i]);
				break;
			case INT8OID:
				scoring->thresholds[dim][i] = (double) DatumGetInt64(elems[i]);
				break;
			case NUMERICOID:
				if (numeric_is_nan(DatumGetNumeric(elems[i])))
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("%s must be finite numbers", param)));
				scoring->thresholds[dim][i] = RfmMonetaryKey(DatumGetNumeric(elems[i]));
				break;
			default:
				elog(ERROR, "unexpected threshold element type %u", elemtype);
		}
	}
	scoring->nthresholds[dim] = n;
	scoring->use_thresholds = true;
}

/* Segment names as text, looked up once per distinct score. */
typedef struct RfmSegmentCache
{
	bool		done[1000];
	text	   *name[1000];
} RfmSegmentCache;

/*
 * The segment of a score as text (null: none), copied out of segment.c's
 * cache at once, as segment.h asks, and kept for the other customers with
 * the same score: at most 729 lookups however many customers.
 */
static text *
RfmSegmentText(RfmSegmentCache *cache, RfmScore score, int bins)
{
	if (!cache->done[score])
	{
		const char *name = RfmSegmentOf(score, bins);

		cache->name[score] = name ? cstring_to_text(name) : NULL;
		cache->done[score] = true;
	}
	return cache->name[score];
}

/* Arguments of loyalty.rfm_segmentation, in order. */
enum
{
	ARG_ORDERS,
	ARG_CUSTOMER_COLUMN,
	ARG_ORDERED_AT_COLUMN,
	ARG_AMOUNT_COLUMN,
	ARG_AS_OF,
	ARG_BINS,
	ARG_WINDOW_LENGTH,
	ARG_MONETARY_MODE,
	ARG_RECENCY_THRESHOLDS,
	ARG_FREQUENCY_THRESHOLDS,
	ARG_MONETARY_THRESHOLDS,
	ARG_FREQUENCY_UNIT,
	ARG_ORDER_COLUMN
};

/* Result columns of loyalty.rfm_segmentation, in order. */
enum
{
	OUT_CUSTOMER_ID,
	OUT_LAST_ORDER,
	OUT_RECENCY_DAYS,
	OUT_FREQUENCY,
	OUT_MONETARY,
	OUT_SCORE,
	OUT_SEGMENT,
	OUT_NATTS
};

PG_FUNCTION_INFO_V1(rfm_segmentation);

/* Parameter names of the three column arguments, in order. */
static const char *const rfm_column_params[3] = {
	"customer_column", "ordered_at_column", "amount_column"
};

/*
 * The scalar arguments of loyalty.rfm_segmentation, all checked before a
 * row is read, into *scoring (zeroed by the caller).  Returns whether
 * monetary is the average basket (else the spend in the window).
 */
static bool
RfmSegmentationArgs(FunctionCallInfo fcinfo, RfmScoring *scoring,
					RfmFrequencyUnit *unit)
{
	bool		average;
	int			k;

	/* arguments */
	LoyaltyArgNotNull(fcinfo, ARG_ORDERS, "orders");
	for (k = 0; k < 3; k++)
		LoyaltyArgNotNull(fcinfo, ARG_CUSTOMER_COLUMN + k, rfm_column_params[k]);
	LoyaltyArgNotNull(fcinfo, ARG_AS_OF, "as_of");
	LoyaltyArgNotNull(fcinfo, ARG_BINS, "bins");
	LoyaltyArgNotNull(fcinfo, ARG_WINDOW_LENGTH, "window_length");
	LoyaltyArgNotNull(fcinfo, ARG_MONETARY_MODE, "monetary_mode");
	RfmCheckAsOf(PG_GETARG_TIMESTAMPTZ(ARG_AS_OF));
	RfmCheckInterval(PG_GETARG_INTERVAL_P(ARG_WINDOW_LENGTH), "window_length");

	scoring->bins = PG_GETARG_INT32(ARG_BINS);
	if (scoring->bins < RFM_MIN_BINS || scoring->bins > RFM_MAX_BINS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("bins must be between %d and %d, not %d",
						RFM_MIN_BINS, RFM_MAX_BINS, scoring->bins)));
	{
		char	   *mode = text_to_cstring(PG_GETARG_TEXT_PP(ARG_MONETARY_MODE));

		if (strcmp(mode, "total") == 0)
			average = false;
		else if (strcmp(mode, "average") == 0)
			average = true;
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid monetary mode: \"%s\"", mode),
					 errhint("Use 'total' (spend in the window) or 'average' (average basket).")));
	}
	RfmReadThresholds(fcinfo, ARG_RECENCY_THRESHOLDS, RFM_RECENCY,
					  "recency_thresholds", scoring);
	RfmReadThresholds(fcinfo, ARG_FREQUENCY_THRESHOLDS, RFM_FREQUENCY,
					  "frequency_thresholds", scoring);
	RfmReadThresholds(fcinfo, ARG_MONETARY_THRESHOLDS, RFM_MONETARY,
					  "monetary_thresholds", scoring);
	RfmCheckScoring(scoring);
	/* the 0.2.0 declaration (before ALTER EXTENSION UPDATE) counts rows */
	if (PG_NARGS() <= ARG_FREQUENCY_UNIT)
	{
		*unit = RFM_COUNT_ROWS;
		return average;
	}
	LoyaltyArgNotNull(fcinfo, ARG_FREQUENCY_UNIT, "frequency_unit");
	{
		char	   *u = text_to_cstring(PG_GETARG_TEXT_PP(ARG_FREQUENCY_UNIT));

		if (strcmp(u, "rows") == 0)
			*unit = RFM_COUNT_ROWS;
		else if (strcmp(u, "orders") == 0)
			*unit = RFM_COUNT_ORDERS;
		else if (strcmp(u, "days") == 0)
			*unit = RFM_COUNT_DAYS;
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid frequency unit: \"%s\"", u),
					 errhint("Use 'rows' (every order row), 'orders' (distinct values of order_column) or 'days' (distinct days with an order).")));
		if ((*unit == RFM_COUNT_ORDERS) != !PG_ARGISNULL(ARG_ORDER_COLUMN))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("order_column must be given exactly when frequency_unit is 'orders'")));
	}
	return average;
}

/*
 * The orders relation, locked first (the lock the scan takes anyway, so
 * that its columns cannot change between the checks and the scan), and its
 * three columns: names, attribute numbers, types and collations.  Sets the
 * time and amount kinds of the scan; returns the relkind.
 */
static char
RfmSegmentationRelation(FunctionCallInfo fcinfo, Oid relid, NameData *cols,
						AttrNumber *attnums, Oid *coltypes, Oid *colcolls,
						RfmScan *scan)
{
	char		relkind;
	bool		ok;
	int			k;

	LockRelationOid(relid, AccessShareLock);
	relkind = get_rel_relkind(relid);
	if (relkind == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	if (relkind != RELKIND_RELATION && relkind != RELKIND_VIEW &&
		relkind != RELKIND_MATVIEW && relkind != RELKIND_FOREIGN_TABLE &&
		relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("%s is not a table or view", RfmRelationName(relid)),
				 errdetail("orders must be a table, view, materialized view, foreign table or partitioned table.")));
	for (k = 0; k < 3; k++)
	{
		namestrcpy(&cols[k], NameStr(*PG_GETARG_NAME(ARG_CUSTOMER_COLUMN + k)));
		attnums[k] = RfmLookupColumn(relid, rfm_column_params[k], &cols[k],
									 &coltypes[k], &colcolls[k]);
	}
	scan->time_kind = LoyaltyTimeKindOf(getBaseType(coltypes[1]), &ok);
	if (!ok)
		RfmWrongType(relid, &cols[1], coltypes[1], "the order time",
					 "ordered_at_column must be of type date, timestamp or timestamp with time zone.");
	scan->amount_kind = LoyaltyAmountKindOf(getBaseType(coltypes[2]), &ok);
	if (!ok)
		RfmWrongType(relid, &cols[2], coltypes[2], "the order amount",
					 "amount_column must be of type numeric, smallint, integer, bigint, real or double precision.");
	return relkind;
}

/*
 * Score every customer of the scan at once.  Customers are visited in the
 * table's order, here and for the output (the table does not change in
 * between).  Returns the scores, allocated in workcxt.
 */
static RfmScore *
RfmSegmentationScore(RfmScan *scan, const RfmScoring *scoring, bool average,
					 MemoryContext workcxt, Size scan_bytes)
{
	MemoryContext old;
	RfmKeys    *keys;
	RfmScore   *scores;
	Size		scoring_bytes;
	rfmcust_iterator iter;
	RfmCustomer *c;
	uint32		ncustomers = scan->table->members;
	uint32		i;

	old = MemoryContextSwitchTo(workcxt);
	keys = palloc_extended(sizeof(RfmKeys) * Max(ncustomers, 1), MCXT_ALLOC_HUGE);
	scores = palloc_extended(sizeof(RfmScore) * Max(ncustomers, 1), MCXT_ALLOC_HUGE);
	i = 0;
	rfmcust_start_iterate(scan->table, &iter);
	while ((c = rfmcust_iterate(scan->table, &iter)) != NULL)
	{
		RfmMoney	sum;

		RfmCustomerSum(c, &sum);
		keys[i].key[RFM_RECENCY] =
			RfmRecencyKey(RfmRecencyDays(scan->period.as_of, c->last_order));
		keys[i].key[RFM_FREQUENCY] = (double) c->frequency;
		if (!average)
			keys[i].key[RFM_MONETARY] = RfmMoneyKey(&sum);
		else
		{
			MemoryContext keycxt = MemoryContextSwitchTo(scan->rowcxt);
			Numeric		avg = RfmAverageBasket(RfmMoneyToNumeric(&sum),
											   c->frequency);

			keys[i].key[RFM_MONETARY] = RfmMonetaryKey(avg);
			MemoryContextSwitchTo(keycxt);
			MemoryContextReset(scan->rowcxt);
		}
		i++;
	}
	Assert(i == ncustomers);
	scoring_bytes = MemoryContextMemAllocated(workcxt, true) +
		RfmScoreAllMemory(scoring, (int) ncustomers);
	elog(DEBUG1, "rfm_segmentation: %zu bytes while scoring; peak %zu bytes for %u customers",
		 scoring_bytes, Max(scan_bytes, scoring_bytes), ncustomers);
	RfmScoreAll(scoring, keys, (int) ncustomers, scores);
	pfree(keys);
	MemoryContextSwitchTo(old);
	return scores;
}

/*
 * The result rows of loyalty.rfm_segmentation, one per customer of the
 * scan, in the order RfmSegmentationScore scored them.
 */
static void
RfmSegmentationOutput(FunctionCallInfo fcinfo, RfmScan *scan,
					  const RfmScore *scores, int bins, bool average,
					  Oid custtype, MemoryContext workcxt)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext old;
	FmgrInfo	key_out;
	bool		key_is_text;
	RfmSegmentCache *segcache;
	MemoryContext outcxt;
	rfmcust_iterator iter;
	RfmCustomer *c;
	uint32		i;

	InitMaterializedSRF(fcinfo, 0);
	if (rsinfo->setDesc->natts != OUT_NATTS)
		elog(ERROR, "rfm_segmentation must return %d columns", OUT_NATTS);
	key_is_text = scan->key_kind == RFM_KEY_VARLENA && getBaseType(custtype) != BYTEAOID;
	if (!key_is_text)
	{
		Oid			outfn;
		bool		isvarlena;

		getTypeOutputInfo(custtype, &outfn, &isvarlena);
		fmgr_info_cxt(outfn, &key_out, workcxt);
	}
	segcache = MemoryContextAllocZero(workcxt, sizeof(RfmSegmentCache));
	outcxt = AllocSetContextCreate(workcxt, "rfm_segmentation output",
								   ALLOCSET_DEFAULT_SIZES);
	i = 0;
	rfmcust_start_iterate(scan->table, &iter);
	while ((c = rfmcust_iterate(scan->table, &iter)) != NULL)
	{
		Datum		values[OUT_NATTS];
		bool		nulls[OUT_NATTS];
		text	   *segment;
		Numeric		monetary;
		RfmMoney	sum;

		CHECK_FOR_INTERRUPTS();
		old = MemoryContextSwitchTo(workcxt);
		segment = RfmSegmentText(segcache, scores[i], bins);
		MemoryContextSwitchTo(outcxt);
		memset(nulls, false, sizeof(nulls));
		if (key_is_text)
			values[OUT_CUSTOMER_ID] = c->key;
		else
			values[OUT_CUSTOMER_ID] =
				CStringGetTextDatum(OutputFunctionCall(&key_out, c->key));
		values[OUT_LAST_ORDER] = TimestampTzGetDatum(c->last_order);
		nulls[OUT_LAST_ORDER] = c->last_order == RFM_NO_LAST_ORDER;
		values[OUT_RECENCY_DAYS] =
			Int32GetDatum(RfmRecencyDays(scan->period.as_of, c->last_order));
		values[OUT_FREQUENCY] = Int64GetDatum(c->frequency);
		RfmCustomerSum(c, &sum);
		monetary = RfmMoneyToNumeric(&sum);
		if (average)
			monetary = RfmAverageBasket(monetary, c->frequency);
		values[OUT_MONETARY] = NumericGetDatum(monetary);
		values[OUT_SCORE] = RfmScoreGetDatum(scores[i]);
		values[OUT_SEGMENT] = PointerGetDatum(segment);
		nulls[OUT_SEGMENT] = segment == NULL;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		MemoryContextSwitchTo(old);
		MemoryContextReset(outcxt);
		i++;
	}
}

/* ------------------------------------------------------------------------
 * Citus: the per-customer aggregation pushed down to the workers
 *
 * Over a table distributed by the customer column, the row-by-row scan
 * above would ship every order to the coordinator.  Instead one grouped
 * query runs next to each shard (Citus pushes an aggregation grouped by
 * the distribution column down whole) and returns one row per customer
 * holding exactly what RfmScanReceive would have accumulated from its
 * rows: the last non-refund order up to as_of, the non-refund orders and
 * the sum of amounts in the window, and the rows it would have skipped or
 * refused.  Only for a timestamptz order time (the bounds are compared in
 * the column's own type) and rows counted as orders; otherwise the rows
 * are read as on a single node.
 * ------------------------------------------------------------------------ */

/* Columns of the pushed-down query. */
enum
{
	RFM_AGG_KEY,				/* customer key */
	RFM_AGG_LAST,				/* last non-refund order up to as_of */
	RFM_AGG_FREQUENCY,			/* non-refund orders in the window */
	RFM_AGG_SUM,				/* sum of the amounts in the window */
	RFM_AGG_NO_TIME,			/* rows without a (finite) time */
	RFM_AGG_DATED,				/* rows with a finite time up to as_of */
	RFM_AGG_ROWS,				/* every row */
	RFM_AGG_NOT_FINITE,			/* dated rows with a NaN or infinite amount */
	RFM_AGG_NATTS
};

/*
 * Whether relid is a Citus table hash-distributed by the column named
 * column.  Read from Citus's catalog when it exists (loyalty does not
 * depend on Citus); false without it or when the caller may not read it.
 * Runs inside the caller's SPI connection, with the caller's rights.
 */
static bool
RfmCitusDistributedBy(Oid relid, const char *column)
{
	Oid			dist = get_relname_relid("pg_dist_partition", PG_CATALOG_NAMESPACE);
	Oid			argtypes[1] = {OIDOID};
	Datum		args[1];
	bool		isnull;
	Datum		d;

	if (!OidIsValid(dist) ||
		pg_class_aclcheck(dist, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		return false;
	args[0] = ObjectIdGetDatum(relid);
	if (SPI_execute_with_args("SELECT pg_catalog.column_to_column_name(p.logicalrelid, p.partkey)"
							  "  FROM pg_catalog.pg_dist_partition p"
							  " WHERE p.logicalrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass"
							  "   AND p.partmethod OPERATOR(pg_catalog.=) 'h'",
							  1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read pg_dist_partition");
	if (SPI_processed == 0)
		return false;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return !isnull && strcmp(TextDatumGetCString(d), column) == 0;
}

/*
 * The grouped query over relation rel (customer c, time t, amount a, all
 * quoted), as_of $1 and window start $2: every operator and aggregate
 * schema-qualified.  A refund is an amount below zero, as RfmDecodeAmount
 * says; '0' takes the amount column's type.
 */
static void
RfmPushdownQuery(StringInfo q, const char *rel, const char *c, const char *t,
				 const char *a, LoyaltyAmountKind kind)
{
	const char *finite;
	const char *order;
	const char *window;
	const char *dated;

	finite = psprintf("pg_catalog.isfinite(%s)", t);
	dated = psprintf("%s OPERATOR(pg_catalog.<=) $1 AND %s", t, finite);
	window = psprintf("%s AND %s OPERATOR(pg_catalog.>=) $2", dated, t);
	order = psprintf("(%s IS NULL OR %s OPERATOR(pg_catalog.>=) '0')", a, a);
	appendStringInfo(q, "SELECT %s,", c);
	appendStringInfo(q, " pg_catalog.max(%s) FILTER (WHERE %s AND %s),", t, dated, order);
	appendStringInfo(q, " pg_catalog.count(*) FILTER (WHERE %s AND %s),", window, order);
	appendStringInfo(q, " pg_catalog.sum(%s) FILTER (WHERE %s),", a, window);
	appendStringInfo(q, " pg_catalog.count(*) FILTER (WHERE %s IS NULL OR NOT %s),", t, finite);
	appendStringInfo(q, " pg_catalog.count(*) FILTER (WHERE %s),", dated);
	appendStringInfo(q, " pg_catalog.count(*),");
	switch (kind)
	{
		case LOYALTY_AMOUNT_NUMERIC:
#if PG_VERSION_NUM >= 140000
		case LOYALTY_AMOUNT_FLOAT4:
		case LOYALTY_AMOUNT_FLOAT8:
			appendStringInfo(q, " pg_catalog.count(*) FILTER (WHERE %s AND %s OPERATOR(pg_catalog.=)"
							 " ANY ('{NaN,Infinity,-Infinity}'))", dated, a);
#else
			appendStringInfo(q, " pg_catalog.count(*) FILTER (WHERE %s AND %s OPERATOR(pg_catalog.=) 'NaN')",
							 dated, a);
#endif
			break;
#if PG_VERSION_NUM < 140000
		case LOYALTY_AMOUNT_FLOAT4:
		case LOYALTY_AMOUNT_FLOAT8:
			appendStringInfo(q, " pg_catalog.count(*) FILTER (WHERE %s AND %s OPERATOR(pg_catalog.=)"
							 " ANY ('{NaN,Infinity,-Infinity}'))", dated, a);
			break;
#endif
		default:
			appendStringInfoString(q, " 0::pg_catalog.int8");
			break;
	}
	appendStringInfo(q, " FROM %s GROUP BY %s", rel, c);
}

/* DestReceiver startup of the pushed-down query: its shape, and the sums' type. */
static void
RfmAggStartup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
	RfmScan    *scan = (RfmScan *) self;
	bool		ok;

	if (typeinfo->natts != RFM_AGG_NATTS ||
		TupleDescAttr(typeinfo, RFM_AGG_KEY)->atttypid != scan->coltypes[0] ||
		TupleDescAttr(typeinfo, RFM_AGG_LAST)->atttypid != TIMESTAMPTZOID)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the orders relation changed while rfm_segmentation read it")));
	scan->sum_kind = LoyaltyAmountKindOf(TupleDescAttr(typeinfo, RFM_AGG_SUM)->atttypid, &ok);
	if (!ok)
		elog(ERROR, "rfm_segmentation: unexpected type of the pushed-down sums");
}

/*
 * One customer's aggregates from the workers: what RfmScanReceive would
 * have made of its rows (a customer appears once; a second row for an
 * equal key merges as more rows would).
 */
static bool
RfmAggReceive(TupleTableSlot *slot, DestReceiver *self)
{
	RfmScan    *scan = (RfmScan *) self;
	Datum	   *v;
	bool	   *nl;
	Datum		key;
	RfmCustomer *c;
	MemoryContext old;

	slot_getallattrs(slot);
	v = slot->tts_values;
	nl = slot->tts_isnull;
	if (nl[RFM_AGG_KEY])
	{
		scan->no_customer += DatumGetInt64(v[RFM_AGG_ROWS]);
		return true;
	}
	scan->no_time += DatumGetInt64(v[RFM_AGG_NO_TIME]);
	if (DatumGetInt64(v[RFM_AGG_NOT_FINITE]) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("order amount must be a finite number"),
				 errdetail("NaN and infinite amounts cannot be summed as money.")));
	if (DatumGetInt64(v[RFM_AGG_DATED]) == 0)
		return true;			/* no order up to as_of: not a customer yet */

	old = MemoryContextSwitchTo(scan->rowcxt);
	key = v[RFM_AGG_KEY];
	if (scan->key_typlen == -1)
		key = PointerGetDatum(pg_detoast_datum_packed((struct varlena *) DatumGetPointer(key)));
	c = RfmCustomerEnter(scan, key);
	scan->recent = NULL;
	if (!nl[RFM_AGG_LAST] && DatumGetTimestampTz(v[RFM_AGG_LAST]) > c->last_order)
		c->last_order = DatumGetTimestampTz(v[RFM_AGG_LAST]);
	c->frequency += DatumGetInt64(v[RFM_AGG_FREQUENCY]);
	if (!nl[RFM_AGG_SUM])
	{
		RfmAmount	amount;

		RfmDecodeAmount(scan->sum_kind, v[RFM_AGG_SUM], &amount);
		RfmCustomerAdd(scan, c, &amount);
	}
	scan->nrows += DatumGetInt64(v[RFM_AGG_DATED]);
	MemoryContextSwitchTo(old);
	if (!scan->rowcxt->isReset)
		MemoryContextReset(scan->rowcxt);
	return true;
}

/*
 * loyalty.rfm_segmentation(orders, customer_column, ordered_at_column,
 * amount_column, as_of, bins, window_length, monetary_mode,
 * recency_thresholds, frequency_thresholds, monetary_thresholds): one row
 * per customer with at least one row dated up to as_of.  Validates
 * everything before reading a row, scans once, scores once.
 */
Datum
rfm_segmentation(PG_FUNCTION_ARGS)
{
	Oid			relid;
	char		relkind;
	NameData	cols[3];
	AttrNumber	attnums[3];
	Oid			coltypes[3];
	Oid			colcolls[3];
	bool		average;
	RfmScoring	scoring;
	RfmScan		scan;
	MemoryContext workcxt;
	MemoryContext old;
	StringInfoData query;
	SPIPlanPtr	plan;
	RfmScore   *scores;
	Size		scan_bytes;
	AttrNumber	order_attnum = InvalidAttrNumber;
	bool		pushdown;
	MemoryContext qold;
	ParamListInfo params = NULL;
	Oid			ptypes[2] = {TIMESTAMPTZOID, TIMESTAMPTZOID};

	memset(&scoring, 0, sizeof(scoring));
	memset(&scan, 0, sizeof(scan));
	average = RfmSegmentationArgs(fcinfo, &scoring, &scan.unit);

	scan.tz = RfmProgramZone();
	RfmMakePeriod(PG_GETARG_TIMESTAMPTZ(ARG_AS_OF),
				  PG_GETARG_INTERVAL_P(ARG_WINDOW_LENGTH), scan.tz, &scan.period);
	relid = PG_GETARG_OID(ARG_ORDERS);
	relkind = RfmSegmentationRelation(fcinfo, relid, cols, attnums, coltypes,
									  colcolls, &scan);
	scan.natts = 3;
	if (scan.unit == RFM_COUNT_ORDERS)
	{
		NameData	ocol;
		Oid			otype;
		Oid			ocoll;

		namestrcpy(&ocol, NameStr(*PG_GETARG_NAME(ARG_ORDER_COLUMN)));
		order_attnum = RfmLookupColumn(relid, "order_column", &ocol, &otype, &ocoll);
		scan.natts = 4;
	}

	/* working memory, freed before returning */
	workcxt = AllocSetContextCreate(CurrentMemoryContext, "rfm_segmentation",
									ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(workcxt);
	RfmChooseKeyKind(&scan, relid, &cols[0], coltypes[0], colcolls[0]);
	memcpy(scan.coltypes, coltypes, sizeof(coltypes));
	scan.pub.receiveSlot = RfmScanReceive;
	scan.pub.rStartup = RfmScanStartup;
	scan.pub.rShutdown = RfmScanShutdown;
	scan.pub.rDestroy = RfmScanDestroy;
	scan.pub.mydest = DestNone;
	scan.cxt = workcxt;
	scan.rowcxt = AllocSetContextCreate(workcxt, "rfm_segmentation row",
										ALLOCSET_SMALL_SIZES);
	scan.table = rfmcust_create(workcxt,
								RfmEstimateCustomers(relid, relkind, attnums[0]),
								&scan);
	if (scan.unit != RFM_COUNT_ROWS)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(RfmSeenKey);
		ctl.entrysize = sizeof(RfmSeenKey);
		ctl.hcxt = workcxt;
		scan.seen = hash_create("rfm_segmentation orders", 1024, &ctl,
								HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	MemoryContextSwitchTo(old);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	pushdown = scan.unit == RFM_COUNT_ROWS && scan.time_kind == LOYALTY_TIME_TIMESTAMPTZ &&
		RfmCitusDistributedBy(relid, get_attname(relid, attnums[0], false));

	/*
	 * The scan: identifiers quoted, no value in the text (as_of and the
	 * window are applied in C, or passed as parameters to the pushed-down
	 * aggregation).  The plan is not kept: it names one relation and its
	 * planning cost is nothing next to the scan.
	 */
	qold = MemoryContextSwitchTo(workcxt);
	initStringInfo(&query);
	if (pushdown)
	{
		RfmPushdownQuery(&query, RfmRelationName(relid),
						 quote_identifier(get_attname(relid, attnums[0], false)),
						 quote_identifier(get_attname(relid, attnums[1], false)),
						 quote_identifier(get_attname(relid, attnums[2], false)),
						 scan.amount_kind);
		scan.pub.receiveSlot = RfmAggReceive;
		scan.pub.rStartup = RfmAggStartup;
		params = makeParamList(2);
		params->params[0].value = TimestampTzGetDatum(scan.period.as_of);
		params->params[1].value = TimestampTzGetDatum(scan.period.start);
		for (int k = 0; k < 2; k++)
		{
			params->params[k].ptype = TIMESTAMPTZOID;
			params->params[k].isnull = false;
			params->params[k].pflags = PARAM_FLAG_CONST;
		}
	}
	else
	{
		appendStringInfo(&query, "SELECT %s, %s, %s",
						 quote_identifier(get_attname(relid, attnums[0], false)),
						 quote_identifier(get_attname(relid, attnums[1], false)),
						 quote_identifier(get_attname(relid, attnums[2], false)));
		/* the order id as text: its type's output, the caller's own cast */
		if (scan.unit == RFM_COUNT_ORDERS)
			appendStringInfo(&query, ", %s::pg_catalog.text",
							 quote_identifier(get_attname(relid, order_attnum, false)));
		appendStringInfo(&query, " FROM %s", RfmRelationName(relid));
	}
	MemoryContextSwitchTo(qold);

	plan = SPI_prepare_cursor(query.data, pushdown ? 2 : 0, ptypes, CURSOR_OPT_PARALLEL_OK);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare_cursor(\"%s\") failed: %s",
			 query.data, SPI_result_code_string(SPI_result));
	if (pushdown)
		elog(DEBUG1, "rfm_segmentation: per-customer aggregation pushed down to the Citus workers");
	LoyaltySPIExecuteToDestParams(plan, params, true, (DestReceiver *) &scan);
	SPI_freeplan(plan);
	SPI_finish();

	/*
	 * Working memory, reported at DEBUG1 (the benchmark prints it): the
	 * context's blocks at the end of the scan, and while scoring, plus the
	 * scratch RfmScoreAll takes.  Neither depends on the number of orders.
	 */
	scan_bytes = MemoryContextMemAllocated(workcxt, true);
	if (scan.no_customer > 0 || scan.no_time > 0)
		ereport(NOTICE,
				(errmsg("rfm_segmentation ignored %llu rows of %s",
						(unsigned long long) (scan.no_customer + scan.no_time),
						RfmRelationName(relid)),
				 errdetail("Rows without a customer: %llu; rows without an order time: %llu.",
						   (unsigned long long) scan.no_customer,
						   (unsigned long long) scan.no_time)));
	elog(DEBUG1, "rfm_segmentation: %llu rows, %u customers, %zu bytes after the scan",
		 (unsigned long long) scan.nrows, scan.table->members, scan_bytes);

	scores = RfmSegmentationScore(&scan, &scoring, average, workcxt, scan_bytes);
	RfmSegmentationOutput(fcinfo, &scan, scores, scoring.bins, average,
						  coltypes[0], workcxt);
	MemoryContextDelete(workcxt);
	return (Datum) 0;
}
