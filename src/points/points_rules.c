/*
 * points_rules.c
 *		Earning by rule: loyalty.earn_for_order() and loyalty.earn_for_action().
 *
 * Every active rule of the event (purchase, or the action's name) whose
 * window, weekday, currency and minimum amount match the earning time adds
 *		floor((amount * points_per_unit + fixed_points) * multiplier * tier multiplier)
 * computed in exact numeric and rounded down once per rule (the tier
 * multiplier is that of the customer's tier before this earning, and only
 * for rules with apply_tier_multiplier).  A capped rule gives at most what is
 * left of its cap in the current period (day, ISO week, calendar month or
 * year in the program's time zone, or lifetime).  Each rule with points gets
 * its own lot with the rule's pending days and expiry.  An order whose rules
 * give nothing still records an entry of 0 points (its amount counts as
 * qualifying spend, and the reference is taken).
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/numeric.h"

#include "compat.h"
#include "points.h"

PG_FUNCTION_INFO_V1(points_earn_for_order);
PG_FUNCTION_INFO_V1(points_earn_for_action);

typedef enum RulesPlanId
{
	P_RULES,
	P_EVENT,
	NRULESPLANS
} RulesPlanId;

/* The statements of this file (defined at its end), prepared on first use. */
static LoyaltyPlanCatalog rules_plans;

static const char rules_sql[] =
"SELECT r.rule_id, r.name,"
"       floor((coalesce($3 * r.points_per_unit, 0) + r.fixed_points) * r.multiplier"
"             * CASE WHEN r.apply_tier_multiplier THEN $11 ELSE 1 END)::int8,"
"       r.cap_points, ps.period_start, coalesce(u.points, 0), r.pending_days,"
"       r.expiry_months, r.expiry_rounding, r.qualifying, r.cap_period"
"  FROM loyalty.earning_rule r"
" CROSS JOIN LATERAL (SELECT CASE r.cap_period WHEN 'day' THEN $7 WHEN 'week' THEN $8"
"                          WHEN 'month' THEN $9 WHEN 'year' THEN $10"
"                          WHEN 'lifetime' THEN '-infinity'::date END AS period_start) ps"
"  LEFT JOIN loyalty.points_rule_usage u"
"         ON u.customer_id = $6 AND u.rule_id = r.rule_id AND u.period_start = ps.period_start"
" WHERE r.active AND r.event = $1"
"   AND (r.valid_from IS NULL OR r.valid_from <= $2)"
"   AND (r.valid_until IS NULL OR $2 < r.valid_until)"
"   AND (r.weekdays IS NULL OR $5::int2 = ANY (r.weekdays))"
"   AND (r.min_amount IS NULL OR $3 >= r.min_amount)"
"   AND (r.currency IS NULL OR r.currency = $4)"
" ORDER BY r.rule_id";

static const char event_sql[] =
"SELECT 1 FROM loyalty.earning_rule WHERE event = $1 LIMIT 1";

/* ISO text of a cap period start, as stored in the entry's detail. */
static char *
PeriodText(DateADT d)
{
	int			y,
				m,
				day;

	if (DATE_IS_NOBEGIN(d))
		return pstrdup("-infinity");
	j2date(d + POSTGRES_EPOCH_JDATE, &y, &m, &day);
	return psprintf("%04d-%02d-%02d", y, m, day);
}

/*
 * Shared body of both entry points: lock, look the reference up, settle,
 * evaluate the rules and write one earn entry with a lot per rule.
 * amount is NULL for actions.
 */
static Datum
PointsEarnByRule(FunctionCallInfo fcinfo, const char *customer_id, const char *event,
				 const char *reference, Datum amount, bool has_amount,
				 const char *currency, TimestampTz at, uint64 hash)
{
	Datum		v[11];
	char		n[11] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	PointsAccount acct;
	PointsChange chg;
	PointsReceipt receipt;
	pg_tz	   *tz;
	int64		total = 0;
	int64		qualifying = 0;
	StringInfoData detail;
	int			nrules;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PointsLockAccount(&acct, customer_id, true, at);
	PointsClaimReference(reference, customer_id);
	if (PointsFindRequest(reference, POINTS_EARN, customer_id, hash, &receipt))
	{
		SPI_finish();
		return PointsReceiptDatum(fcinfo, &receipt);
	}
	PointsCheckBackdating(&acct, at, NULL);
	PointsSettleIfDue(&acct, at);
	tz = acct.program.tz;

	v[0] = CStringGetTextDatum(event);
	v[1] = TimestampTzGetDatum(at);
	v[2] = amount;
	n[2] = has_amount ? ' ' : 'n';
	v[3] = currency ? CStringGetTextDatum(currency) : (Datum) 0;
	n[3] = currency ? ' ' : 'n';
	v[4] = Int32GetDatum(PointsIsoDow(at, tz));
	v[5] = CStringGetTextDatum(customer_id);
	v[6] = DateADTGetDatum(PointsPeriodStart(at, "day", tz));
	v[7] = DateADTGetDatum(PointsPeriodStart(at, "week", tz));
	v[8] = DateADTGetDatum(PointsPeriodStart(at, "month", tz));
	v[9] = DateADTGetDatum(PointsPeriodStart(at, "year", tz));
	v[10] = acct.tier_multiplier;
	LoyaltyExec(LoyaltyPlanGet(&rules_plans, P_RULES), v, n, false, SPI_OK_SELECT);
	nrules = SPI_processed;

	PointsChangeInit(&chg, POINTS_EARN, at);
	chg.reference = reference;
	chg.request_hash = hash;
	chg.lots = palloc0(sizeof(PointsNewLot) * (nrules + 1));
	chg.usage_rule = palloc0(sizeof(int64) * (nrules + 1));
	chg.usage_period = palloc0(sizeof(DateADT) * (nrules + 1));
	chg.usage_points = palloc0(sizeof(int64) * (nrules + 1));
	initStringInfo(&detail);
	appendStringInfoChar(&detail, '[');

	for (int i = 0; i < nrules; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		rule_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		char	   *name = SPI_getvalue(tup, desc, 2);
		int64		points = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
		Datum		cap = SPI_getbinval(tup, desc, 4, &isnull);
		bool		capped = !isnull;
		DateADT		period = capped ? DatumGetDateADT(SPI_getbinval(tup, desc, 5, &isnull)) : 0;
		int64		used = DatumGetInt64(SPI_getbinval(tup, desc, 6, &isnull));
		int32		pending_days = DatumGetInt32(SPI_getbinval(tup, desc, 7, &isnull));
		Datum		expiry = SPI_getbinval(tup, desc, 8, &isnull);
		bool		default_expiry = isnull;
		PointsRounding rounding = PointsParseRounding(SPI_getvalue(tup, desc, 9));
		bool		rule_qualifying = DatumGetBool(SPI_getbinval(tup, desc, 10, &isnull));
		PointsNewLot *lot;
		int			months;

		if (capped)
			points = Min(points, Max(DatumGetInt64(cap) - used, 0));
		if (points <= 0)
			continue;

		lot = &chg.lots[chg.nlots++];
		lot->points = points;
		lot->earned_at = at;
		lot->pending = pending_days > 0;
		if (lot->pending)
			lot->available_at = PointsAddDays(at, pending_days, tz);
		if (default_expiry)
		{
			months = acct.program.expiry_months;
			rounding = acct.program.expiry_rounding;
		}
		else
			months = DatumGetInt32(expiry);
		lot->expires = months > 0;
		if (lot->expires)
		{
			lot->expires_at = PointsAddMonths(at, months, rounding, tz);
			/* a pending period longer than the validity: count it from availability */
			if (lot->pending && lot->available_at >= lot->expires_at)
				lot->expires_at = PointsAddMonths(lot->available_at, months, rounding, tz);
		}

		total = PointsAdd(total, points, "earned points");
		if (rule_qualifying)
			qualifying = PointsAdd(qualifying, points, "qualifying points");
		if (capped)
		{
			chg.usage_rule[chg.nusage] = rule_id;
			chg.usage_period[chg.nusage] = period;
			chg.usage_points[chg.nusage] = points;
			chg.nusage++;
		}
		if (detail.len > 1)
			appendStringInfoChar(&detail, ',');
		appendStringInfo(&detail, "{\"rule_id\": " INT64_FORMAT ", \"rule\": ", rule_id);
		escape_json(&detail, name);
		appendStringInfo(&detail, ", \"points\": " INT64_FORMAT, points);
		if (capped)
			appendStringInfo(&detail, ", \"period\": \"%s\"", PeriodText(period));
		appendStringInfoChar(&detail, '}');
	}
	appendStringInfoChar(&detail, ']');

	if (nrules == 0 && !has_amount)
	{
		/* an action no rule has ever named is a mistake, not "no points today" */
		Datum		ev[1];

		ev[0] = CStringGetTextDatum(event);
		LoyaltyExec(LoyaltyPlanGet(&rules_plans, P_EVENT), ev, NULL, false, SPI_OK_SELECT);
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_POINTS_UNKNOWN_ACTION),
					 errmsg("no earning rule for action \"%s\"", event),
					 errdetail("%s", PointsDetail("unknown_action", "action", PointsQuote(event), NULL)),
					 errhint("Add a row to loyalty.earning_rule with event = '%s'.", event)));
	}

	chg.points = total;
	chg.detail = detail.data;
	chg.qualifying = qualifying;
	if (has_amount)
	{
		chg.amount = amount;
		chg.has_amount = true;
		acct.qualifying_spend = NumericGetDatum(LoyaltyNumericAdd(DatumGetNumeric(acct.qualifying_spend), DatumGetNumeric(amount)));
	}
	PointsCredit(&acct, &chg);
	acct.lifetime_earned = PointsAdd(acct.lifetime_earned, total, "lifetime points");
	acct.qualifying = PointsAdd(acct.qualifying, qualifying, "qualifying points");
	chg.bucket_month = PointsMonthOf(at, tz);
	if (qualifying > 0 || has_amount)
		PointsCheckUpgrade(&acct, &chg);
	PointsReceiptFrom(&receipt, &acct, PointsWrite(&acct, &chg, NULL), total);
	SPI_finish();
	return PointsReceiptDatum(fcinfo, &receipt);
}

/*
 * loyalty.earn_for_order(customer_id, reference, amount, currency, at): the
 * points of an order by the purchase rules; the amount counts as qualifying
 * spend (for tiers on spend) whatever the points.
 */
Datum
points_earn_for_order(PG_FUNCTION_ARGS)
{
	char	   *customer_id = text_to_cstring(PointsArgKey(fcinfo, 0, "customer_id"));
	char	   *reference = text_to_cstring(PointsArgKey(fcinfo, 1, "reference"));
	Numeric		amount;
	char	   *currency = NULL;
	char		program_currency[4];
	TimestampTz at;
	const char *parts[2];

	LoyaltyArgNotNull(fcinfo, 2, "amount");
	amount = PG_GETARG_NUMERIC(2);
	if (numeric_is_nan(amount) || numeric_is_inf(amount) ||
		LoyaltyNumericCmp(amount, LoyaltyNumericZero()) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("amount must be a finite number of at least 0")));
	if (!PG_ARGISNULL(3))
	{
		currency = text_to_cstring(PG_GETARG_TEXT_PP(3));
		if (!LoyaltyIsCurrencyCode(currency, strlen(currency)))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid currency \"%s\"", currency),
					 errdetail("A currency must be three upper-case letters (ISO 4217)."),
					 errhint("Pass NULL for the program currency.")));
	}
	at = PointsArgWriteTime(fcinfo, 4, "at");

	/*
	 * One program currency: amounts of different currencies are never added
	 * up (qualifying spend, tiers on spend), so an order in another currency
	 * is refused rather than counted.  NULL means the program currency.
	 */
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	memcpy(program_currency, PointsConfigGet()->program.currency, sizeof(program_currency));
	SPI_finish();
	if (currency != NULL && strcmp(currency, program_currency) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_POINTS_CURRENCY),
				 errmsg("currency %s is not the points program's currency %s", currency, program_currency),
				 errdetail("%s", PointsDetail("currency_mismatch", "currency", PointsQuote(currency),
										 "program_currency", PointsQuote(program_currency), NULL)),
				 errhint("Order amounts earn points and count towards tiers in the program currency only: convert the amount to %s, or set loyalty.points_program.currency.", program_currency)));

	/* (the fingerprint keeps the argument as given, as before 0.3.0) */
	parts[0] = numeric_normalize(amount);
	parts[1] = currency;
	if (currency == NULL)
		currency = program_currency;
	return PointsEarnByRule(fcinfo, customer_id, "purchase", reference, NumericGetDatum(amount),
							true, currency, at, PointsHash("order", customer_id, 2, parts));
}

/*
 * loyalty.earn_for_action(customer_id, action, reference, at): the points of
 * an action (review, referral, signup, birthday, or any event named by a
 * rule).  Orders go through earn_for_order.
 */
Datum
points_earn_for_action(PG_FUNCTION_ARGS)
{
	char	   *customer_id = text_to_cstring(PointsArgKey(fcinfo, 0, "customer_id"));
	char	   *action = text_to_cstring(PointsArgKey(fcinfo, 1, "action"));
	char	   *reference = text_to_cstring(PointsArgKey(fcinfo, 2, "reference"));
	TimestampTz at = PointsArgWriteTime(fcinfo, 3, "at");
	const char *parts[1];

	if (strcmp(action, "purchase") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("purchases earn through loyalty.earn_for_order()"),
				 errdetail("earn_for_action() takes other actions: review, referral, signup, birthday, ...")));
	parts[0] = action;
	return PointsEarnByRule(fcinfo, customer_id, action, reference, (Datum) 0, false, NULL, at,
							PointsHash("action", customer_id, 1, parts));
}

/* ------------------------------------------------------------------------
 * The statements above, as a plan catalogue (loyalty_spi.h): prepared on
 * first use in a backend with a generic plan, and kept.
 * ------------------------------------------------------------------------ */

static const LoyaltyPlanDef RulesPlanDefs[NRULESPLANS] = {
	[P_RULES] = {rules_sql, 11, {TEXTOID, TIMESTAMPTZOID, NUMERICOID, TEXTOID,
			INT4OID, TEXTOID, DATEOID, DATEOID, DATEOID, DATEOID, NUMERICOID}},
	[P_EVENT] = {event_sql, 1, {TEXTOID}},
};

static SPIPlanPtr rules_plan_slots[NRULESPLANS];

static LoyaltyPlanCatalog rules_plans = {
	"points rules", RulesPlanDefs, NRULESPLANS,
	CURSOR_OPT_GENERIC_PLAN, NULL, rules_plan_slots, 0
};
