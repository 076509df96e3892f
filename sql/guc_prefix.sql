--
-- loyalty: the loyalty.* settings.  Once the library is loaded the prefix
-- is reserved (PostgreSQL 15+, MarkGUCPrefixReserved): a misspelt setting
-- is an error, not a silent placeholder, and one set before the load is
-- removed with a warning.  PostgreSQL 13 and 14 cannot reserve a prefix:
-- there the load warns about a loyalty.* placeholder set before it
-- (EmitWarningsOnPlaceholders) and a later one is accepted like any custom
-- setting; expected/guc_prefix_1.out is that output.
--

-- a fresh session: the library is not loaded yet
SET loyalty.set_before_load = 'x';
LOAD 'loyalty';
SHOW loyalty.set_before_load;

-- after the load
SET loyalty.no_such_setting = 'x';
SHOW loyalty.no_such_setting;

-- a real one is set as usual
SET loyalty.refresh_future_skew = '5min';
SHOW loyalty.refresh_future_skew;
