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
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))

# The install script is the concatenation of the per-concern SQL files, in
# this fixed order (each file may use objects of the files before it).
SQL_PARTS = \
	src/loyalty.sql \
	src/access.sql \
	src/rfm_score.sql \
	src/segment.sql \
	src/rfm.sql \
	src/rfm_track.sql \
	src/coupon_code.sql \
	src/coupon.sql \
	src/points.sql \
	src/points_tier.sql \
	src/points_coupon.sql \
	src/grants.sql

# Upgrade scripts.  Released ones are frozen files src/loyalty--A--B.sql.
# The one to the version under development is built: its handwritten head
# src/upgrade/A--B.sql, then the fragments in src/upgrade/A--B.d/ in name
# order (one per concern, each re-creating what changed since A), then
# grants.sql, then a re-grant of the recorded access levels.
# test/scripts/upgrade.sh proves that updating from every earlier release
# (frozen install scripts in test/upgrade/) gives exactly a fresh install.
PREV_VERSION = 0.2.0
UPGRADE_SCRIPT = $(EXTENSION)--$(PREV_VERSION)--$(EXTVERSION).sql
UPGRADE_HEAD = src/upgrade/$(PREV_VERSION)--$(EXTVERSION).sql
UPGRADE_FRAGMENTS = $(sort $(wildcard src/upgrade/$(PREV_VERSION)--$(EXTVERSION).d/*.sql))

DATA_built = $(EXTENSION)--$(EXTVERSION).sql $(UPGRADE_SCRIPT)
DATA = $(sort $(wildcard src/$(EXTENSION)--*--*.sql))

REGRESS = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --inputdir=. --load-extension=$(EXTENSION)

ISOLATION = $(patsubst test/isolation/specs/%.spec,%,$(sort $(wildcard test/isolation/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test/isolation --outputdir=output_iso --load-extension=$(EXTENSION)

PGTAP_DB ?= loyalty_tap
PGTAP_TESTS = $(sort $(wildcard test/pgtap/*.sql))

PG_CPPFLAGS = -I$(srcdir)/src -DLOYALTY_VERSION='"$(EXTVERSION)"'
# -Wextra minus unused-parameter: PostgreSQL's own headers (fmgr.h's
# PG_FUNCTION_ARGS, bufpage.h) are not clean under it.
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter

EXTRA_CLEAN = $(DATA_built) output_iso

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

$(EXTENSION)--$(EXTVERSION).sql: $(SQL_PARTS) $(EXTENSION).control
	cat $(SQL_PARTS) > $@

# the library reports the version it was built for
src/loyalty.o: $(EXTENSION).control

$(UPGRADE_SCRIPT): $(UPGRADE_HEAD) $(UPGRADE_FRAGMENTS) src/grants.sql $(EXTENSION).control
	{ cat $(UPGRADE_HEAD) $(UPGRADE_FRAGMENTS) src/grants.sql; \
	  echo; echo 'SELECT loyalty.reapply_grants();'; } > $@

# Run the pgTAP suites in a scratch database with pgtap and loyalty installed.
prove:
	dropdb --if-exists $(PGTAP_DB)
	createdb $(PGTAP_DB)
	psql -X -q -v ON_ERROR_STOP=1 -d $(PGTAP_DB) -c 'CREATE EXTENSION pgtap' -c 'CREATE EXTENSION $(EXTENSION)'
	pg_prove --verbose --dbname $(PGTAP_DB) $(PGTAP_TESTS)

.PHONY: prove
