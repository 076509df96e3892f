
/* ---------------------------------------------------------------------------
 * grants.sql: nothing for PUBLIC (last part of the install script)
 *
 * CREATE FUNCTION grants EXECUTE to PUBLIC by default; loyalty hands rights
 * out only through loyalty.grant_access().
 * ------------------------------------------------------------------------ */

REVOKE ALL ON SCHEMA loyalty FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA loyalty FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA loyalty FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA loyalty FROM PUBLIC;
