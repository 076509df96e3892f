#!/usr/bin/env bash
# test/demo.sh: see loyalty working, on a throwaway cluster.
#
#   bash test/demo.sh
#
# Installs missing Debian packages, builds and installs the extension, starts
# a throwaway cluster (or uses PGHOST/PGPORT), loads the deterministic sample
# shop (test/data/sample_retail.sql) and prints what every feature does with
# it (test/demo/*.sql, in order).  The cluster is removed on exit.

. "$(dirname "$0")/lib.sh"

loyalty_packages
loyalty_build
loyalty_cluster
cd "$LOYALTY_ROOT"

db=loyalty_demo
loyalty_psql -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
loyalty_log "loading the sample shop (${DEMO_CUSTOMERS:-2000} customers, three years of orders)"
loyalty_psql -d "$db" -v customers="${DEMO_CUSTOMERS:-2000}" -f test/data/sample_retail.sql
loyalty_psql -d "$db" -c "CREATE EXTENSION loyalty"

for part in test/demo/*.sql; do
	psql -X -q -v ON_ERROR_STOP=1 -d "$db" -P pager=off -f "$part"
done
loyalty_log "demo finished"
