/*
 * stats_store.h
 *		The one writer of loyalty.customer_stats (stats_store.c).
 *
 * Invariants
 *
 * Who writes.  Every INSERT, UPDATE and DELETE of loyalty.customer_stats
 * is made by stats_store.c, for three callers: the fold of pending tracked
 * changes, back-fills and rebuilds (rfm_track.c: RfmStatsApply,
 * RfmStatsSetOrderTimes, RfmStatsResetAll) and refresh_segments
 * (rfm_refresh.c: RfmStatsWriteScores, RfmStatsRemoveLeavers,
 * RfmStatsCompact).  Tracked statements never write it: they append to
 * loyalty.customer_stats_delta (rfm_track.c).  No other file names the
 * table in a write, through SQL or below the executor.
 *
 * Lock order.  A writer takes its row locks on customer_stats in one pass
 * in ascending customer_id byte order (COLLATE "C", the primary key's
 * order): callers hand their keys sorted, the direct path updates (or, for
 * a customer a refresh found without rows, locks FOR UPDATE) each row at
 * its place in that order, and the SQL path first locks the rows it will
 * update in that order (RfmStatsWriteScores) or feeds them to its
 * statement as an array in that order (the upserts), so the order never
 * depends on a plan or on planner settings.  Rows locked this way are only
 * written again later in the same transaction (RfmStatsRemoveLeavers,
 * RfmStatsSetOrderTimes), which then waits for nobody.  Customers without
 * a row when their writer looked are inserted after that pass, in key
 * order; such an insert waits only when another transaction inserted or
 * kept the same key meanwhile.
 *
 * Recheck.  One loop (RfmStoreUpdate in stats_store.c) serves every
 * update below the executor: it updates the version read; if another
 * transaction updated it since, it waits for that one, locks the latest
 * version and computes the new values again from it (what UPDATE's
 * recheck does under READ COMMITTED; a serialization failure under
 * REPEATABLE READ or SERIALIZABLE); a row deleted meanwhile is reported
 * to the caller, never resurrected.
 *
 * Index policy.  The direct path runs only while the primary key on
 * customer_id is the table's only index; a non-HOT update gives it one
 * entry, hinted as unchanged so that btree removes the old versions'
 * entries bottom-up.  New rows are never inserted below the executor.
 *
 * Fallback.  The direct path (table_tuple_update below the executor) is
 * refused, and every write goes through SQL, hence the executor (triggers,
 * rules, constraints, row level security, every index), when
 * customer_stats has a trigger, a rule, row level security, a CHECK
 * constraint, a generated column, another table access method, or any
 * index other than the extension's primary key (RfmStoreDirectOk, checked
 * each time the table is opened for writing).  The compacting rewrite
 * after the first refresh is then skipped as well.
 */
#ifndef LOYALTY_STATS_STORE_H
#define LOYALTY_STATS_STORE_H

#include "postgres.h"

#include "storage/itemptr.h"
#include "utils/snapshot.h"

#include "rfm_live.h"

/* 0-based positions of customer_stats' columns. */
typedef struct RfmStatsAtts
{
	int			id,
				rows,
				orders,
				spend,
				first,
				last,
				days,
				score,
				segment,
				since,
				odays,			/* order_days, first_day, first_day_spend */
				fday,
				fspend;
} RfmStatsAtts;

/* The first and last order times a row holds after a change. */
typedef struct RfmStatsTimes
{
	bool		first_null;
	bool		last_null;
	TimestampTz first;
	TimestampTz last;
} RfmStatsTimes;

/*
 * One row a refresh writes: a scored customer (new score, segment, pending
 * additions to fold in, buckets to prune), a customer without rows to lock
 * for RfmStatsRemoveLeavers (leave), or a new customer to insert (insert).
 */
typedef struct RfmStatsScoreRow
{
	char	   *key;
	ItemPointerData tid;		/* the version the refresh read */
	bool		leave;			/* no rows left: lock only */
	bool		insert;			/* no statistics row: insert */
	bool		seg_changed;	/* segment differs from the one read */
	bool		prune;			/* drop buckets before prune_before */
	int16		score;
	Datum		segment;		/* text */
	RfmStatsChange *fold;		/* pending additions to fold in, or NULL */
} RfmStatsScoreRow;

extern Oid	RfmStatsRelid(void);
extern void RfmStatsColumns(TupleDesc desc, RfmStatsAtts *at);
extern bool RfmStatsHasAllTime(void);
extern void RfmStatsTally(Datum *v, bool *nl, const RfmStatsAtts *at, RfmDays *old, RfmDays *merged);
extern void RfmStatsMerge(Datum *v, bool *nl, const RfmStatsAtts *at, const RfmStatsChange *ch);

/* fold, back-fill, rebuild (rfm_track.c) */
extern void RfmStatsApply(RfmStatsChange *changes, int n, RfmStatsTimes *times);
extern void RfmStatsSetOrderTimes(char **keys, Datum *first, bool *first_null,
								  Datum *last, bool *last_null, int n);
extern void RfmStatsResetAll(void);

/* refresh_segments (rfm_refresh.c) */
extern void RfmStatsWriteScores(RfmStatsScoreRow *rows, int n, Snapshot snap,
								TimestampTz as_of, DateADT prune_before, Oid scoretype);
extern int64 RfmStatsRemoveLeavers(char **keys, int n, int64 snapshot_id);
extern bool RfmStatsCompact(void);

#endif							/* LOYALTY_STATS_STORE_H */
