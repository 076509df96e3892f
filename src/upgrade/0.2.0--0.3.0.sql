-- loyalty 0.2.0 -> 0.3.0: head of the upgrade script.
--
-- The Makefile appends the fragments in src/upgrade/0.2.0--0.3.0.d/ (one per
-- concern, in name order), then grants.sql, then re-applies the recorded
-- access levels.  When 0.3.0 is released the built script is frozen into
-- src/ (see README, "Releasing").

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION loyalty UPDATE TO '0.3.0'" to load this file. \quit
