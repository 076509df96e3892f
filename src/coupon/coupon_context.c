/*
 * coupon_context.c
 *		The order context of a coupon call: parsed from jsonb (or made from a
 *		plain amount) once, checked strictly, and fingerprinted.
 *
 * Shape (other keys are ignored, so an app may pass its whole cart):
 *	{"amount": 120.00, "currency": "EUR", "shipping": 5.90,
 *	 "new_customer": true,
 *	 "items": [{"sku": "A1", "category": "shoes", "price": 60.00,
 *				"quantity": 2}]}
 *
 *	amount		merchandise subtotal before discounts, shipping excluded;
 *				optional when items are given (then it is their sum), and
 *				when both are given it must equal their sum
 *	currency	ISO 4217 letters; absent means the campaign's currency
 *	shipping	shipping cost, default 0
 *	new_customer  true / false (or null: unknown), see coupon_rules.c
 *	items		at most COUPON_MAX_ITEMS objects: sku (required string),
 *				category (string, optional), price (number >= 0),
 *				quantity (whole number 1..COUPON_MAX_QUANTITY)
 *
 * Every violation is an error with SQLSTATE 22023 (invalid_parameter_value)
 * naming the offending key, except numbers too large (22003) and too many
 * items (54000).  Nothing is written before the context is parsed, so a bad
 * context never leaves a row behind.
 */
#include "coupon.h"

#include "common/hashfn.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"

/*
 * Minor units of the ISO 4217 currencies that do not use two decimals.
 * Every other three-letter code uses two.
 */
static const struct
{
	const char *code;
	int			decimals;
}			CurrencyExceptions[] =
{
	{"BHD", 3}, {"BIF", 0}, {"CLF", 4}, {"CLP", 0}, {"DJF", 0}, {"GNF", 0},
	{"IQD", 3}, {"ISK", 0}, {"JOD", 3}, {"JPY", 0}, {"KMF", 0}, {"KRW", 0},
	{"KWD", 3}, {"LYD", 3}, {"OMR", 3}, {"PYG", 0}, {"RWF", 0}, {"TND", 3},
	{"UGX", 0}, {"UYI", 0}, {"UYW", 4}, {"VND", 0}, {"VUV", 0}, {"XAF", 0},
	{"XOF", 0}, {"XPF", 0}
};

/*
 * Decimals a discount in this currency is rounded to (ISO 4217 minor
 * units): 2 unless the currency is one of the listed exceptions.
 */
int
CouponCurrencyDecimals(const char *currency)
{
	size_t		i;

	for (i = 0; i < lengthof(CurrencyExceptions); i++)
		if (strcmp(CurrencyExceptions[i].code, currency) == 0)
			return CurrencyExceptions[i].decimals;
	return 2;
}

/*
 * Check a customer id (COUPON_MAX_ID_LEN) or order reference
 * (LOYALTY_MAX_KEY_BYTES) argument: not null (the caller checks),
 * 1..maxlen bytes.  Returns it as a C string.
 */
char *
CouponIdentifier(const char *what, text *value, int maxlen)
{
	int			len = VARSIZE_ANY_EXHDR(value);

	if (len == 0 || len > maxlen)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s", what),
				 errdetail("The %s must have 1 to %d bytes; this one has %d.",
						   what, maxlen, len)));
	return text_to_cstring(value);
}

/* Raise the error of a bad order context, naming the problem. */
pg_noreturn static void
ContextError(int sqlstate, const char *detail)
{
	ereport(ERROR,
			(errcode(sqlstate),
			 errmsg("invalid order context"),
			 errdetail("%s", detail)));
}

/* The bound all amounts and prices must stay below: 10^15. */
static Numeric
AmountLimit(void)
{
	static char limit[COUPON_MAX_AMOUNT_DIGITS + 2];

	if (limit[0] == '\0')
	{
		memset(limit, '0', COUPON_MAX_AMOUNT_DIGITS + 1);
		limit[0] = '1';
		limit[COUPON_MAX_AMOUNT_DIGITS + 1] = '\0';
	}
	return DatumGetNumeric(DirectFunctionCall3(numeric_in,
											   CStringGetDatum(limit),
											   ObjectIdGetDatum(InvalidOid),
											   Int32GetDatum(-1)));
}

/*
 * A money value of the context: a JSON number, >= 0 and < 10^15.  where
 * names it in messages ("\"amount\"", "item 3: \"price\"").
 */
static Numeric
ContextMoney(const JsonbValue *v, const char *where, Numeric limit)
{
	Numeric		n;

	if (v->type != jbvNumeric)
		ContextError(ERRCODE_INVALID_PARAMETER_VALUE,
					 psprintf("%s must be a number.", where));
	n = v->val.numeric;
	if (LoyaltyNumericCmp(n, LoyaltyNumericZero()) < 0)
		ContextError(ERRCODE_INVALID_PARAMETER_VALUE,
					 psprintf("%s must not be negative.", where));
	if (LoyaltyNumericCmp(n, limit) >= 0)
		ContextError(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
					 psprintf("%s must be less than 10^%d.", where,
							  COUPON_MAX_AMOUNT_DIGITS));
	return n;
}

/* A non-empty JSON string of at most COUPON_MAX_SKU_LEN bytes, copied. */
static char *
ContextName(const JsonbValue *v, const char *where)
{
	if (v->type != jbvString)
		ContextError(ERRCODE_INVALID_PARAMETER_VALUE,
					 psprintf("%s must be a string.", where));
	if (v->val.string.len == 0 || v->val.string.len > COUPON_MAX_SKU_LEN)
		ContextError(ERRCODE_INVALID_PARAMETER_VALUE,
					 psprintf("%s must have 1 to %d bytes.", where,
							  COUPON_MAX_SKU_LEN));
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* Parse one element of "items" (1-based position n for messages). */
static void
ContextItem(JsonbValue *elem, int n, Numeric limit, CouponItem *item)
{
	JsonbContainer *obj;
	JsonbValue	v;
	Numeric		q;

	if (elem->type != jbvBinary || !JsonContainerIsObject(elem->val.binary.data))
		ContextError(ERRCODE_INVALID_PARAMETER_VALUE,
					 psprintf("Item %d must be an object.", n));
	obj = elem->val.binary.data;

	if (!getKeyJsonValueFromContainer(obj, "sku", 3, &v))
		ContextError(ERRCODE_INVALID_PARAMETER_VALUE,
					 psprintf("Item %d has no \"sku\".", n));
	item->sku = ContextName(&v, psprintf("Item %d: \"sku\"", n));

	item->category = NULL;
	if (getKeyJsonValueFromContainer(obj, "category", 8, &v) && v.type != jbvNull)
		item->category = ContextName(&v, psprintf("Item %d: \"category\"", n));

	if (!getKeyJsonValueFromContainer(obj, "price", 5, &v))
		ContextError(ERRCODE_INVALID_PARAMETER_VALUE,
					 psprintf("Item %d has no \"price\".", n));
	item->price = ContextMoney(&v, psprintf("Item %d: \"price\"", n), limit);

	if (!getKeyJsonValueFromContainer(obj, "quantity", 8, &v))
		ContextError(ERRCODE_INVALID_PARAMETER_VALUE,
					 psprintf("Item %d has no \"quantity\".", n));
	if (v.type != jbvNumeric)
		ContextError(ERRCODE_INVALID_PARAMETER_VALUE,
					 psprintf("Item %d: \"quantity\" must be a number.", n));
	q = v.val.numeric;
	if (LoyaltyNumericCmp(q, LoyaltyNumericTrunc(q, 0)) != 0)
		ContextError(ERRCODE_INVALID_PARAMETER_VALUE,
					 psprintf("Item %d: \"quantity\" must be a whole number.", n));
	if (LoyaltyNumericCmp(q, LoyaltyNumericFromInt64(1)) < 0 ||
		LoyaltyNumericCmp(q, LoyaltyNumericFromInt64(COUPON_MAX_QUANTITY)) > 0)
		ContextError(ERRCODE_INVALID_PARAMETER_VALUE,
					 psprintf("Item %d: \"quantity\" must be between 1 and %d.",
							  n, COUPON_MAX_QUANTITY));
	item->quantity = DatumGetInt64(DirectFunctionCall1(numeric_int8,
													   NumericGetDatum(q)));
	item->line_total = LoyaltyNumericMul(item->price, q);
}

/*
 * The fingerprint of a parsed context: equal for contexts that describe the
 * same order (numbers compared by value, 60 = 60.00), different otherwise
 * with overwhelming probability.  Repeated calls for one order_ref must
 * carry the same context; this is what they are compared by.
 */
static void
ContextHash(OrderContext *ctx)
{
	StringInfoData buf;
	int			i;

	initStringInfo(&buf);
	appendStringInfo(&buf, "a=%s;s=%s;c=%s;n=%d;i=%d",
					 numeric_normalize(ctx->amount),
					 numeric_normalize(ctx->shipping),
					 ctx->has_currency ? ctx->currency : "",
					 ctx->new_customer,
					 ctx->has_items ? ctx->nitems : -1);
	for (i = 0; i < ctx->nitems; i++)
	{
		CouponItem *it = &ctx->items[i];

		appendStringInfo(&buf, "\036%s\037%s\037%d\037%s\037" INT64_FORMAT,
						 it->sku, it->category ? it->category : "",
						 it->category != NULL,
						 numeric_normalize(it->price), it->quantity);
	}
	ctx->hash = (int64) DatumGetUInt64(hash_any_extended((unsigned char *) buf.data,
														 buf.len, 0));
	pfree(buf.data);
}

/*
 * Parse and check a jsonb order context.  Errors name the offending key;
 * see the file header for the shape and the SQLSTATEs.
 */
void
CouponContextFromJsonb(Jsonb *jb, OrderContext *ctx)
{
	JsonbValue	v;
	Numeric		limit = AmountLimit();
	bool		has_amount = false;

	memset(ctx, 0, sizeof(*ctx));
	ctx->json = jb;
	ctx->new_customer = -1;
	ctx->shipping = LoyaltyNumericZero();

	if (!JB_ROOT_IS_OBJECT(jb) || JB_ROOT_IS_SCALAR(jb))
		ContextError(ERRCODE_INVALID_PARAMETER_VALUE,
					 "The order context must be a JSON object.");

	if (getKeyJsonValueFromContainer(&jb->root, "amount", 6, &v))
	{
		ctx->amount = ContextMoney(&v, "\"amount\"", limit);
		has_amount = true;
	}
	if (getKeyJsonValueFromContainer(&jb->root, "shipping", 8, &v) &&
		v.type != jbvNull)
		ctx->shipping = ContextMoney(&v, "\"shipping\"", limit);

	if (getKeyJsonValueFromContainer(&jb->root, "currency", 8, &v) &&
		v.type != jbvNull)
	{
		const char *s = v.val.string.val;

		if (v.type != jbvString || !LoyaltyIsCurrencyCode(s, v.val.string.len))
			ContextError(ERRCODE_INVALID_PARAMETER_VALUE,
						 "\"currency\" must be three upper-case letters (ISO 4217).");
		memcpy(ctx->currency, s, 3);
		ctx->currency[3] = '\0';
		ctx->has_currency = true;
	}

	if (getKeyJsonValueFromContainer(&jb->root, "new_customer", 12, &v) &&
		v.type != jbvNull)
	{
		if (v.type != jbvBool)
			ContextError(ERRCODE_INVALID_PARAMETER_VALUE,
						 "\"new_customer\" must be true, false or null.");
		ctx->new_customer = v.val.boolean ? 1 : 0;
	}

	if (getKeyJsonValueFromContainer(&jb->root, "items", 5, &v) &&
		v.type != jbvNull)
	{
		JsonbContainer *arr;
		Numeric		sum = LoyaltyNumericZero();
		int			i;

		if (v.type != jbvBinary || !JsonContainerIsArray(v.val.binary.data))
			ContextError(ERRCODE_INVALID_PARAMETER_VALUE,
						 "\"items\" must be an array.");
		arr = v.val.binary.data;
		ctx->nitems = JsonContainerSize(arr);
		if (ctx->nitems > COUPON_MAX_ITEMS)
			ContextError(ERRCODE_PROGRAM_LIMIT_EXCEEDED,
						 psprintf("\"items\" has %d elements; at most %d are allowed.",
								  ctx->nitems, COUPON_MAX_ITEMS));
		ctx->has_items = true;
		ctx->items = palloc0(sizeof(CouponItem) * Max(ctx->nitems, 1));
		for (i = 0; i < ctx->nitems; i++)
		{
			JsonbValue *elem = getIthJsonbValueFromContainer(arr, i);

			ContextItem(elem, i + 1, limit, &ctx->items[i]);
			sum = LoyaltyNumericAdd(sum, ctx->items[i].line_total);
		}
		if (!has_amount)
		{
			if (LoyaltyNumericCmp(sum, limit) >= 0)
				ContextError(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
							 psprintf("The items total must be less than 10^%d.",
									  COUPON_MAX_AMOUNT_DIGITS));
			ctx->amount = sum;
			has_amount = true;
		}
		else if (LoyaltyNumericCmp(sum, ctx->amount) != 0)
			ContextError(ERRCODE_INVALID_PARAMETER_VALUE,
						 psprintf("\"amount\" (%s) differs from the sum of price * quantity over \"items\" (%s).",
								  numeric_normalize(ctx->amount),
								  numeric_normalize(sum)));
	}

	if (!has_amount)
		ContextError(ERRCODE_INVALID_PARAMETER_VALUE,
					 "The order context needs \"amount\" or \"items\".");
	ContextHash(ctx);
}

/*
 * The context of the plain-amount overloads: an order of that merchandise
 * amount, no items, in the campaign's currency.
 */
void
CouponContextFromAmount(Numeric amount, OrderContext *ctx)
{
	Numeric		limit = AmountLimit();

	memset(ctx, 0, sizeof(*ctx));
	ctx->new_customer = -1;
	ctx->shipping = LoyaltyNumericZero();
	if (LoyaltyNumericCmp(amount, LoyaltyNumericZero()) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid order amount"),
				 errdetail("The order amount must not be negative.")));
	/* NaN and infinity sort above every number */
	if (LoyaltyNumericCmp(amount, limit) >= 0)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("invalid order amount"),
				 errdetail("The order amount must be a number less than 10^%d.",
						   COUPON_MAX_AMOUNT_DIGITS)));
	ctx->amount = amount;
	ContextHash(ctx);
}

PG_FUNCTION_INFO_V1(coupon_currency_decimals);

/*
 * loyalty.currency_decimals(currency text) RETURNS integer: the minor units
 * discounts in this currency are rounded to, so that the campaign admin
 * functions (coupon.sql) refuse limits a discount could not pay exactly.
 * The currency must be three upper-case letters (22023).
 */
Datum
coupon_currency_decimals(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	const char *s = VARDATA_ANY(t);
	char		code[4];

	if (VARSIZE_ANY_EXHDR(t) != 3 ||
		s[0] < 'A' || s[0] > 'Z' || s[1] < 'A' || s[1] > 'Z' ||
		s[2] < 'A' || s[2] > 'Z')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid currency"),
				 errdetail("A currency must be three upper-case letters (ISO 4217).")));
	memcpy(code, s, 3);
	code[3] = '\0';
	PG_RETURN_INT32(CouponCurrencyDecimals(code));
}
