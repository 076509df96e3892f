/*
 * common.c
 *		Small rules shared by every family.
 */
#include "loyalty.h"

/*
 * Is s (len bytes, not necessarily terminated) a currency code in the form
 * ISO 4217 gives them: three upper-case ASCII letters?  Coupons (order
 * contexts) and points (earn_for_order, the program currency) check
 * currencies with this one rule.
 */
bool
LoyaltyIsCurrencyCode(const char *s, int len)
{
	if (len != 3)
		return false;
	for (int i = 0; i < 3; i++)
		if (s[i] < 'A' || s[i] > 'Z')
			return false;
	return true;
}
