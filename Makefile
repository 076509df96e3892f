# loyalty: PGXS build.
#
#   make && make install       build and install into the server named by PG_CONFIG
#   make installcheck          pg_regress (sql/, expected/) and isolation specs
#                              (test/isolation/) against a running server
#   make prove                 pgTAP suites under test/pgtap/ with pg_prove
#
# The quick-start scripts (test/run.sh, test/demo.sh) wrap all of this with a
# throwaway cluster; see README.md.

EXTENSION = loyalty
EXTVERSION = $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" $(EXTENSION).control)

MODULE_big = loyalty
# Source tree by family, each family's C, headers and SQL part side by side.
# A family includes headers of common/ and of the families before it in this
# list, never after (test/scripts/tree_shape.sh checks it); src/loyalty.c is
# the module itself, above every family.
FAMILIES = common rfm rfm_live coupon points clv campaign kpi referral mission
OBJS = src/loyalty.o $(foreach f,$(FAMILIES),$(patsubst %.c,%.o,$(sort $(wildcard src/$(f)/*.c))))

# The install script is the concatenation of the per-concern SQL files, in
# this fixed order (each file may use objects of the files before it).
SQL_PARTS = \
	src/common/loyalty.sql \
	src/common/access.sql \
	src/common/settings.sql \
	src/rfm/rfm_score.sql \
	src/rfm/segment.sql \
	src/rfm/rfm.sql \
	src/rfm_live/rfm_track.sql \
	src/coupon/coupon_code.sql \
	src/coupon/coupon.sql \
	src/coupon/coupon_api.sql \
	src/coupon/coupon_budget.sql \
	src/coupon/coupon_qualify.sql \
	src/points/points.sql \
	src/points/points_tier.sql \
	src/points/points_coupon.sql \
	src/points/points_views.sql \
	src/points/points_api.sql \
	src/points/points_qualify.sql \
	src/clv/clv.sql \
	src/campaign/campaign.sql \
	src/campaign/campaign_api.sql \
	src/campaign/campaign_publish.sql \
	src/campaign/campaign_outbox.sql \
	src/kpi/kpi_stats.sql \
	src/kpi/kpi_campaign.sql \
	src/referral/referral.sql \
	src/mission/mission.sql \
	src/citus/citus.sql \
	src/common/grants.sql

# Upgrade scripts: one frozen, hand-written src/upgrade/loyalty--A--B.sql per
# release, kept in the repository (the one to the version under development
# is edited until it is released).  test/scripts/upgrade.sh proves that
# updating from every earlier release (frozen install scripts in
# test/upgrade/) gives exactly a fresh install and keeps every row.
DATA_built = $(EXTENSION)--$(EXTVERSION).sql
DATA = $(sort $(wildcard src/upgrade/$(EXTENSION)--*--*.sql))

REGRESS = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --inputdir=. --load-extension=$(EXTENSION)

ISOLATION = $(patsubst test/isolation/specs/%.spec,%,$(sort $(wildcard test/isolation/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test/isolation --outputdir=output_iso --load-extension=$(EXTENSION)

PGTAP_DB ?= loyalty_tap
PGTAP_TESTS = $(sort $(wildcard test/pgtap/*.sql))

PG_CPPFLAGS = $(foreach f,$(FAMILIES),-I$(srcdir)/src/$(f)) -DLOYALTY_VERSION='"$(EXTVERSION)"'
# -Wextra minus unused-parameter: PostgreSQL's own headers (fmgr.h's
# PG_FUNCTION_ARGS, bufpage.h) are not clean under it.  Warnings are errors
# only when asked (WERROR=1, as the test suite and CI build): a user's newer
# compiler must not break the build over a new warning.
PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter $(if $(WERROR),-Werror)

EXTRA_CLEAN = $(DATA_built) output_iso

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

$(EXTENSION)--$(EXTVERSION).sql: $(SQL_PARTS) $(EXTENSION).control
	cat $(SQL_PARTS) > $@

# the library reports the version it was built for
src/loyalty.o: $(EXTENSION).control

# PGXS tracks no header dependencies (unless PostgreSQL was configured with
# --enable-depend): every object is rebuilt when any header of the tree
# changes (a struct of common/ is laid out alike in every object).
$(OBJS): $(wildcard src/*/*.h)

# Run the pgTAP suites in a scratch database with pgtap and loyalty installed.
prove:
	dropdb --if-exists $(PGTAP_DB)
	createdb $(PGTAP_DB)
	psql -X -q -v ON_ERROR_STOP=1 -d $(PGTAP_DB) -c 'CREATE EXTENSION pgtap' -c 'CREATE EXTENSION $(EXTENSION)'
	pg_prove --verbose --dbname $(PGTAP_DB) $(PGTAP_TESTS)

.PHONY: prove
