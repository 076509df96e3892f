-- 30-coupons: coupon family changes since 0.2.0 (issue 11)
--   * loyalty.currency_decimals(text): minor units of a currency
--   * _campaign_check: limits (amount_off, max_discount) with more decimals
--     than the currency are refused; amounts below 10^15; list sizes
--   * add_campaign_rule: segment and tier names must exist (its final body,
--     which also locks the campaign and kind, is in 50-followup.sql)
--   * _campaign_rule_names_follow and its triggers on loyalty.segment and
--     loyalty.tier: renames carry over to campaign rules, deletes of a named
--     segment or tier are refused
-- Existing rows are kept as they are: a 0.2.0 campaign with an over-precise
-- limit is honoured by truncating the limit (C), a 0.2.0 rule naming a tier
-- that no longer exists validates as config_error (C).

CREATE FUNCTION loyalty.currency_decimals(currency text)
RETURNS integer
AS 'MODULE_PATHNAME', 'coupon_currency_decimals'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.currency_decimals(text) IS
	'Minor units (decimals) of an ISO 4217 currency as coupon discounts use them: 2 unless listed otherwise (JPY 0, KWD 3, CLF 4, ...)';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.currency_decimals(text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE OR REPLACE FUNCTION loyalty._campaign_check(c loyalty.campaign)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	problem text;
	decimals integer;
	too_precise record;
BEGIN
	problem := CASE
		WHEN c.name IS NULL OR c.name = '' THEN
			'name must be a non-empty text'
		WHEN c.kind IS NULL OR c.kind NOT IN ('percent', 'fixed', 'free_shipping', 'buy_x_get_y', 'free_item') THEN
			format('kind must be percent, fixed, free_shipping, buy_x_get_y or free_item, not %L', c.kind)
		WHEN c.currency IS NULL OR c.currency !~ '^[A-Z]{3}$' THEN
			'currency must be three upper-case letters (ISO 4217)'
		WHEN c.kind = 'percent' AND (c.percent_off IS NULL OR c.percent_off <= 0 OR c.percent_off > 100) THEN
			'a percent campaign needs percent_off in (0, 100]'
		WHEN c.kind <> 'percent' AND c.percent_off IS NOT NULL THEN
			'percent_off applies to percent campaigns only'
		WHEN c.kind = 'fixed' AND (c.amount_off IS NULL OR c.amount_off <= 0) THEN
			'a fixed campaign needs a positive amount_off'
		WHEN c.kind <> 'fixed' AND c.amount_off IS NOT NULL THEN
			'amount_off applies to fixed campaigns only'
		WHEN c.kind = 'fixed' AND c.max_discount IS NOT NULL THEN
			'max_discount does not apply to fixed campaigns'
		WHEN c.max_discount IS NOT NULL AND c.max_discount <= 0 THEN
			'max_discount must be positive'
		WHEN c.amount_off >= 1e15 OR c.max_discount >= 1e15 OR c.min_order_amount >= 1e15 THEN
			'amount_off, max_discount and min_order_amount must be finite numbers below 10^15'
		WHEN c.kind = 'buy_x_get_y' AND (c.buy_quantity IS NULL OR c.buy_quantity < 1
										OR c.get_quantity IS NULL OR c.get_quantity < 1) THEN
			'a buy_x_get_y campaign needs buy_quantity >= 1 and get_quantity >= 1'
		WHEN c.kind <> 'buy_x_get_y' AND (c.buy_quantity IS NOT NULL OR c.get_quantity IS NOT NULL) THEN
			'buy_quantity and get_quantity apply to buy_x_get_y campaigns only'
		WHEN c.kind = 'free_item' AND (c.free_sku IS NULL OR c.free_sku = '') THEN
			'a free_item campaign needs free_sku'
		WHEN c.kind = 'free_item' AND (c.free_quantity IS NULL OR c.free_quantity < 1) THEN
			'free_quantity must be at least 1'
		WHEN c.kind <> 'free_item' AND (c.free_sku IS NOT NULL OR c.free_quantity IS NOT NULL) THEN
			'free_sku and free_quantity apply to free_item campaigns only'
		WHEN c.starts_at IS NOT NULL AND c.ends_at IS NOT NULL AND c.ends_at <= c.starts_at THEN
			'ends_at must be after starts_at'
		WHEN c.total_cap IS NOT NULL AND c.total_cap < 0 THEN
			'total_cap must not be negative'
		WHEN c.per_customer_cap IS NOT NULL AND c.per_customer_cap < 1 THEN
			'per_customer_cap must be at least 1'
		WHEN c.max_coupons_per_order IS NOT NULL AND c.max_coupons_per_order < 1 THEN
			'max_coupons_per_order must be at least 1'
		WHEN c.min_order_amount IS NOT NULL AND c.min_order_amount < 0 THEN
			'min_order_amount must not be negative'
		WHEN c.exclusive IS NULL THEN
			'exclusive must be true or false'
		WHEN array_position(c.include_skus, NULL) IS NOT NULL
		  OR array_position(c.exclude_skus, NULL) IS NOT NULL
		  OR array_position(c.include_categories, NULL) IS NOT NULL
		  OR array_position(c.exclude_categories, NULL) IS NOT NULL
		  OR '' = ANY (c.include_skus) OR '' = ANY (c.exclude_skus)
		  OR '' = ANY (c.include_categories) OR '' = ANY (c.exclude_categories) THEN
			'sku and category lists must not contain nulls or empty texts'
		WHEN cardinality(c.include_skus) = 0 OR cardinality(c.exclude_skus) = 0
		  OR cardinality(c.include_categories) = 0 OR cardinality(c.exclude_categories) = 0 THEN
			'an empty sku or category list must be null'
		WHEN cardinality(c.include_skus) > 10000 OR cardinality(c.exclude_skus) > 10000
		  OR cardinality(c.include_categories) > 10000 OR cardinality(c.exclude_categories) > 10000 THEN
			'a sku or category list has at most 10000 entries'
		WHEN EXISTS (SELECT 1 FROM unnest(c.include_skus || c.exclude_skus || c.include_categories
										  || c.exclude_categories) AS e(name)
					 WHERE octet_length(e.name) > 256) THEN
			'a sku or category name has at most 256 bytes'
	END;
	IF problem IS NOT NULL THEN
		RAISE EXCEPTION 'invalid campaign: %', problem
			USING ERRCODE = 'invalid_parameter_value';
	END IF;

	-- a discount never exceeds its limit, so a limit must be payable exactly
	decimals := loyalty.currency_decimals(c.currency);
	SELECT l.field, l.value INTO too_precise
	FROM (VALUES (1, 'amount_off', c.amount_off), (2, 'max_discount', c.max_discount)) AS l(pos, field, value)
	WHERE l.value IS NOT NULL
	  AND l.value OPERATOR(pg_catalog.<>) pg_catalog.trunc(l.value, decimals)
	ORDER BY l.pos LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'invalid campaign: % % has more decimals than % allows', too_precise.field,
			too_precise.value, c.currency
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('%s has %s decimal%s (ISO 4217 minor units); a discount is never more than its limit, so %s must be a whole number of minor units.',
								  c.currency, decimals, CASE WHEN decimals = 1 THEN '' ELSE 's' END,
								  too_precise.field),
				  HINT = format('Give %s with at most %s decimal%s.', too_precise.field, decimals,
								CASE WHEN decimals = 1 THEN '' ELSE 's' END);
	END IF;
END;
$$;

COMMENT ON FUNCTION loyalty._campaign_check(loyalty.campaign) IS
	'Internal: raise 22023 naming the first invalid field of a campaign row (limits with more decimals than the currency: the DETAIL names its decimals)';

CREATE FUNCTION loyalty._campaign_rule_names_follow()
RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	rule_kind text := CASE TG_TABLE_NAME WHEN 'segment' THEN 'segment' ELSE 'tier' END;
	used record;
BEGIN
	IF TG_OP = 'UPDATE' THEN
		UPDATE loyalty.campaign_rule r
		SET params = CASE
				WHEN rule_kind = 'segment' THEN
					jsonb_set(r.params, '{segments}',
							  (SELECT jsonb_agg(CASE WHEN e.v OPERATOR(pg_catalog.=) to_jsonb(OLD.name)
													 THEN to_jsonb(NEW.name) ELSE e.v END ORDER BY e.n)
							   FROM jsonb_array_elements(r.params -> 'segments') WITH ORDINALITY AS e(v, n)))
				WHEN r.params ? 'min_tier' THEN
					CASE WHEN r.params ->> 'min_tier' OPERATOR(pg_catalog.=) OLD.name
						 THEN jsonb_set(r.params, '{min_tier}', to_jsonb(NEW.name)) ELSE r.params END
				ELSE
					jsonb_set(r.params, '{tiers}',
							  (SELECT jsonb_agg(CASE WHEN e.v OPERATOR(pg_catalog.=) to_jsonb(OLD.name)
													 THEN to_jsonb(NEW.name) ELSE e.v END ORDER BY e.n)
							   FROM jsonb_array_elements(r.params -> 'tiers') WITH ORDINALITY AS e(v, n)))
			END
		WHERE r.kind OPERATOR(pg_catalog.=) rule_kind
		  AND (r.params -> CASE rule_kind WHEN 'segment' THEN 'segments' ELSE 'tiers' END ? OLD.name
			   OR (rule_kind = 'tier' AND r.params ->> 'min_tier' OPERATOR(pg_catalog.=) OLD.name));
		RETURN NULL;
	END IF;

	IF pg_catalog.pg_trigger_depth() > 1 THEN
		RETURN NULL;
	END IF;
	SELECT r.rule_id, c.campaign_id, c.name INTO used
	FROM loyalty.campaign_rule r JOIN loyalty.campaign c ON c.campaign_id OPERATOR(pg_catalog.=) r.campaign_id
	WHERE r.kind OPERATOR(pg_catalog.=) rule_kind
	  AND (r.params -> CASE rule_kind WHEN 'segment' THEN 'segments' ELSE 'tiers' END ? OLD.name
		   OR (rule_kind = 'tier' AND r.params ->> 'min_tier' OPERATOR(pg_catalog.=) OLD.name))
	ORDER BY r.rule_id LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'cannot delete % "%": a campaign rule names it', rule_kind, OLD.name
			USING ERRCODE = 'foreign_key_violation',
				  DETAIL = format('Rule %s of campaign %L (id %s) names %s %L.',
								  used.rule_id, used.name, used.campaign_id, rule_kind, OLD.name),
				  HINT = 'Drop the rule with loyalty.drop_campaign_rule() first; a rename carries over to campaign rules.';
	END IF;
	RETURN NULL;
END;
$$;

COMMENT ON FUNCTION loyalty._campaign_rule_names_follow() IS
	'Internal trigger on loyalty.segment and loyalty.tier: a rename carries over to the campaign rules naming it; deleting one a campaign rule names is refused (23503)';

CREATE TRIGGER segment_campaign_rule_rename
	AFTER UPDATE OF name ON loyalty.segment
	FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name)
	EXECUTE FUNCTION loyalty._campaign_rule_names_follow();
CREATE TRIGGER segment_campaign_rule_delete
	AFTER DELETE ON loyalty.segment
	FOR EACH ROW EXECUTE FUNCTION loyalty._campaign_rule_names_follow();

COMMENT ON TRIGGER segment_campaign_rule_rename ON loyalty.segment IS
	'A renamed segment is renamed in the campaign rules that name it';
COMMENT ON TRIGGER segment_campaign_rule_delete ON loyalty.segment IS
	'Refuse deleting a segment a campaign rule names (23503)';

CREATE TRIGGER tier_campaign_rule_rename
	AFTER UPDATE OF name ON loyalty.tier
	FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name)
	EXECUTE FUNCTION loyalty._campaign_rule_names_follow();
CREATE TRIGGER tier_campaign_rule_delete
	AFTER DELETE ON loyalty.tier
	FOR EACH ROW EXECUTE FUNCTION loyalty._campaign_rule_names_follow();

COMMENT ON TRIGGER tier_campaign_rule_rename ON loyalty.tier IS
	'A renamed tier is renamed in the campaign rules that name it';
COMMENT ON TRIGGER tier_campaign_rule_delete ON loyalty.tier IS
	'Refuse deleting a tier a campaign rule names (23503)';
