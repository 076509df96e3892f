/*
 * points.h
 *		Points ledger and tiers: the state of one locked account and the
 *		helpers shared by the earn, spend, reverse, rule and expiry modules.
 *
 * Model (see points.sql for the tables):
 *	- loyalty.points_ledger is append-only.  Every entry carries the signed
 *	  change of the balance net of debt, so for every account
 *	  sum(ledger.points) = available + pending - debt.
 *	- loyalty.points_lot holds what was credited, with its availability and
 *	  expiry; the open lots of an account sum to available + pending.
 *	- The account row is locked (FOR NO KEY UPDATE) at the start of every
 *	  mutating call; lots and ledger of an account are only written under
 *	  that lock, so no two calls interleave on one account.
 *	- Lots that became available or expired since the account was last
 *	  settled are settled (inline, or by expire_points) before the account
 *	  changes; account.next_event_at is never later than the first such
 *	  time, so an account whose next_event_at is in the future is exact.
 */
#ifndef LOYALTY_POINTS_H
#define LOYALTY_POINTS_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "pgtime.h"
#include "utils/date.h"
#include "utils/rel.h"
#include "utils/snapshot.h"

#include "loyalty.h"
#include "loyalty_args.h"
#include "loyalty_numeric.h"
#include "loyalty_spi.h"

/* Documented SQLSTATEs of the points API (class LP). */
#define ERRCODE_POINTS_INSUFFICIENT		MAKE_SQLSTATE('L','P','0','0','1')
#define ERRCODE_POINTS_REFERENCE_CONFLICT MAKE_SQLSTATE('L','P','0','0','2')
#define ERRCODE_POINTS_UNKNOWN_REFERENCE MAKE_SQLSTATE('L','P','0','0','3')
#define ERRCODE_POINTS_UNKNOWN_ACTION	MAKE_SQLSTATE('L','P','0','0','4')
#define ERRCODE_POINTS_REFERENCE_REVERSED MAKE_SQLSTATE('L','P','0','0','5')
#define ERRCODE_POINTS_AMBIGUOUS_REFERENCE MAKE_SQLSTATE('L','P','0','0','6')
/* LP007, LP008 (reward not offered, campaign not exchangeable): points_coupon.sql */
#define ERRCODE_POINTS_CAP_REACHED		MAKE_SQLSTATE('L','P','0','0','9')
#define ERRCODE_POINTS_COUPON_USED		MAKE_SQLSTATE('L','P','0','1','0')
#define ERRCODE_POINTS_CURRENCY			MAKE_SQLSTATE('L','P','0','1','1')
#define ERRCODE_POINTS_RETURN_EXCEEDS	MAKE_SQLSTATE('L','P','0','1','2')

/*
 * Every LP error's DETAIL is machine-readable, in the shape of the coupon
 * family's LY errors (doc/errors.md): one JSON object, "reason" (the
 * SQLSTATE's reason token) first, then the keys fixed per SQLSTATE
 * (doc/points.md, "Errors"); texts JSON strings, numbers plain, unknown
 * values null.  Built by PointsDetail (points_args.c), and in SQL by
 * json_build_object(...)::text (json, not jsonb: it keeps "reason" first).
 */

/*
 * How far a call's business time (at) may lie ahead of the server clock:
 * settling as of a future time would expire lots and activate pending
 * points before their time, irreversibly.  Documented in README.
 */
#define POINTS_MAX_FUTURE_SKEW_SECS	300

/* Derived references are checked on the caller's part (see loyalty.h). */
#define POINTS_EXCHANGE_PREFIX	"exchange:"
#define POINTS_BONUS_SUFFIX		":coupon-bonus"

/* Entry kinds, as stored in points_ledger.kind. */
#define POINTS_EARN		"earn"
#define POINTS_SPEND	"spend"
#define POINTS_EXPIRE	"expire"
#define POINTS_REVERSE	"reverse"
#define POINTS_ADJUST	"adjust"
#define POINTS_RETURN	"return"

/* How a computed expiry is rounded (points_program / earning_rule). */
typedef enum PointsRounding
{
	POINTS_ROUND_NONE,			/* exactly N months after earning */
	POINTS_ROUND_MONTH,			/* end of that month */
	POINTS_ROUND_YEAR			/* end of that year */
} PointsRounding;

/* The program settings (loyalty.points_program and loyalty.settings, defaults when empty). */
typedef struct PointsProgram
{
	pg_tz	   *tz;				/* loyalty.settings.timezone (the program's) */
	char		currency[4];	/* loyalty.points_program.currency */
	bool		spend_basis;	/* tiers on qualifying spend, not points */
	int			window_months;	/* rolling tier window; 0 = lifetime */
	int			expiry_months;	/* default expiry of earn_points; 0 = never */
	PointsRounding expiry_rounding;
	bool		downgrade_on_refund;	/* tier_downgrade = 'on_refund' */
} PointsProgram;

/* A tier of the ladder, as cached (points_config.c). */
typedef struct PointsTierInfo
{
	char	   *name;
	int32		rank;
	Datum		threshold;		/* numeric */
	Datum		multiplier;		/* numeric */
} PointsTierInfo;

/* The cached settings and ladder (tiers in rank order). */
typedef struct PointsConfig
{
	PointsProgram program;
	char	   *timezone;
	int			ntiers;
	PointsTierInfo *tiers;
} PointsConfig;

/* One account, read under its row lock. */
typedef struct PointsAccount
{
	char	   *customer_id;
	bool		found;
	int64		available;
	int64		pending;
	int64		debt;
	int64		lifetime_earned;
	int64		qualifying;
	Datum		qualifying_spend;	/* numeric */
	char	   *tier;			/* NULL: no tier */
	int32		tier_rank;
	Datum		tier_multiplier;	/* numeric; 1 without a tier */
	TimestampTz tier_since;
	bool		has_tier_since;
	bool		has_next_tier;
	Datum		next_threshold; /* numeric threshold of the next tier up */
	bool		has_next_event;
	TimestampTz next_event_at;
	bool		has_settled_at;
	TimestampTz settled_at;		/* business time of the last settlement */
	PointsProgram program;
} PointsAccount;

/* A lot to create. */
typedef struct PointsNewLot
{
	int64		points;
	TimestampTz earned_at;
	bool		pending;		/* available_at is in the future */
	TimestampTz available_at;
	bool		expires;
	TimestampTz expires_at;
} PointsNewLot;

/*
 * Everything one mutating call writes, in one statement (PointsWrite): the
 * ledger entry, lot changes, new lots, the account, the qualifying bucket,
 * rule usage and a tier change.
 */
typedef struct PointsChange
{
	const char *kind;
	int64		points;			/* ledger points (signed) */
	const char *reference;
	const char *reason;
	int64		qualifying;		/* change of qualifying points */
	Datum		amount;			/* numeric change of qualifying spend */
	bool		has_amount;
	int64		debt_change;
	int64		consume;		/* points taken FIFO from available lots */
	/* explicit changes of existing lots */
	int			nmoves;
	int64	   *move_lot;
	int64	   *move_delta;
	/* new lots */
	int			nlots;
	PointsNewLot *lots;
	/* reversed entries */
	int			nreverses;
	int64	   *reverses;
	/* rule usage changes */
	int			nusage;
	int64	   *usage_rule;
	DateADT    *usage_period;
	int64	   *usage_points;
	const char *detail;			/* jsonb text or NULL */
	uint64		request_hash;
	TimestampTz at;
	DateADT		bucket_month;	/* qualifying bucket to change */
	/* write only if no entry has this reference yet (credit and spend plans) */
	bool		guarded;
	/* tier change, if any */
	bool		tier_changed;
	const char *new_tier;
	Datum		tier_value;		/* numeric qualifying value at the change */
} PointsChange;

/* The first result of a request, as stored in the ledger. */
typedef struct PointsReceipt
{
	int64		entry_id;
	char	   *customer_id;
	int64		points;
	int64		available;
	int64		pending;
	int64		debt;
} PointsReceipt;

/* A balance as points_balance computes it (points_balance.c). */
typedef struct PointsBalance
{
	bool		found;			/* the customer has an account */
	int64		available;
	int64		pending;
	int64		debt;
	bool		has_expiry;
	DateADT		expiry_date;	/* last local day of the soonest expiring points */
	int64		expiring;		/* points expiring that day */
	char	   *tier;			/* NULL: no tier */
} PointsBalance;

/*
 * A table of the extension read through a btree on customer_id without the
 * executor (points_balance.c): the table, the index and the numbers of the
 * columns read.
 */
typedef struct PointsKeyIndex
{
	Relation	heap;
	Relation	index;
	AttrNumber	key;			/* customer_id */
	AttrNumber	cols[8];		/* the columns asked for, in order */
} PointsKeyIndex;

/* What PointsKeyIndexOpen found last time for one caller (static, checked at each use). */
typedef struct PointsKeyIndexHint
{
	Oid			relid;
	Oid			indexid;
	AttrNumber	key;
	AttrNumber	cols[8];
} PointsKeyIndexHint;

/* points.c */
extern text *PointsArgKey(FunctionCallInfo fcinfo, int argno, const char *name);
extern text *PointsCheckKey(text *t, const char *name);
extern TimestampTz PointsArgWriteTime(FunctionCallInfo fcinfo, int argno, const char *name);
extern int64 PointsArgPositive(FunctionCallInfo fcinfo, int argno, const char *name);
extern TimestampTz PointsArgTime(FunctionCallInfo fcinfo, int argno, const char *name);
extern void PointsClaimReference(const char *reference, const char *customer_id);
extern void PointsCheckBackdating(const PointsAccount *acct, TimestampTz at, const char *reference);
extern void PointsLockAccount(PointsAccount *acct, const char *customer_id, bool create, TimestampTz at);
extern void PointsSettleIfDue(PointsAccount *acct, TimestampTz at);
extern bool PointsFindRequest(const char *reference, const char *kind, const char *customer_id,
							  uint64 request_hash, PointsReceipt *receipt);
extern void PointsCredit(PointsAccount *acct, PointsChange *chg);
extern void PointsCheckUpgrade(PointsAccount *acct, PointsChange *chg);
extern void PointsChangeInit(PointsChange *chg, const char *kind, TimestampTz at);
extern void PointsSetLotExpiry(PointsNewLot *lot, const PointsProgram *program, TimestampTz at,
							   bool has_expiry, TimestampTz expires_at);
extern Datum PointsReceiptDatum(FunctionCallInfo fcinfo, const PointsReceipt *r);
extern void PointsReceiptFrom(PointsReceipt *r, const PointsAccount *acct, int64 entry_id, int64 points);
extern int64 PointsAdd(int64 a, int64 b, const char *what);
extern uint64 PointsHash(const char *kind, const char *customer_id, int nparts, const char **parts);
extern char *PointsQuote(const char *s);
extern char *PointsJsonInt(int64 value);
extern char *PointsDetail(const char *reason,...);
extern void PointsDebit(PointsAccount *acct, PointsChange *chg, int64 amount, int nexclude, const int64 *exclude);
/* points_time.c */
extern TimestampTz PointsAddMonths(TimestampTz t, int months, PointsRounding rounding, pg_tz *tz);
extern TimestampTz PointsAddDays(TimestampTz t, int days, pg_tz *tz);
extern DateADT PointsMonthOf(TimestampTz t, pg_tz *tz);
extern DateADT PointsPeriodStart(TimestampTz t, const char *period, pg_tz *tz);
extern int	PointsIsoDow(TimestampTz t, pg_tz *tz);
extern PointsRounding PointsParseRounding(const char *s);
extern pg_tz *PointsZone(const char *name);
extern DateADT PointsLastDayBefore(TimestampTz t, pg_tz *tz);

/* points.c */
extern void PointsNoteEvent(PointsAccount *acct, TimestampTz t);

/* points_config.c */
extern void PointsInit(void);
extern const PointsConfig *PointsConfigGet(void);
extern const PointsConfig *PointsConfigGetUnconnected(void);

/* points_balance.c */
extern void PointsBalanceAddLot(PointsBalance *b, bool is_available, int64 remaining,
								bool has_available_at, TimestampTz available_at,
								bool has_expires_at, TimestampTz expires_at,
								TimestampTz at, pg_tz *tz);
extern bool PointsBalanceDirect(text *customer_id, TimestampTz at, pg_tz *tz, PointsBalance *b);
extern bool PointsKeyIndexOpen(PointsKeyIndex *src, PointsKeyIndexHint *hint, const char *table,
							   const char *index, bool partial, int ncols, const char *const *cols,
							   const Oid *types);
extern void PointsKeyIndexClose(PointsKeyIndex *src);
extern struct IndexScanDescData *PointsKeyIndexScan(PointsKeyIndex *src, struct IndexScanDescData *scan,
													Snapshot snapshot, text *key);
extern int64 PointsSlotInt64(struct TupleTableSlot *slot, AttrNumber att);

/* What PointsSettle did: totals over the accounts found, the last one's new balance. */
typedef struct PointsSettled
{
	int64		accounts;		/* accounts found and settled */
	int64		lots;			/* lots expired */
	int64		expired;		/* points expired */
	int64		activated;		/* pending points made available */
	int64		available;		/* the last account's, after */
	int64		pending;
	bool		has_next_event;
	TimestampTz next_event_at;
} PointsSettled;

/* points_expire.c */
extern void PointsSettle(Datum customers, Datum account_rows, TimestampTz as_of, PointsSettled *out);

/* points_return.c */
extern void PointsReturnedOf(const char *customer_id, int64 earn_id, int64 *taken, int64 *qualifying,
							 Datum *amount);
extern void PointsRefundDowngrade(const PointsAccount *acct, TimestampTz earned_at, TimestampTz at);

/* points_write.c */
extern int64 PointsWrite(PointsAccount *acct, PointsChange *chg, int64 *consumed);

#endif							/* LOYALTY_POINTS_H */
