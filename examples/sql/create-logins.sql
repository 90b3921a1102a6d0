-- The least-privilege SQL Server logins the connector uses (one per [logins.NAME] table).
-- Run as a DBA (securityadmin on the server, db_owner in the database):
--   sqlcmd -S sql01 -i examples/sql/create-logins.sql -v READER_PW="..." WRITER_PW="..." ...
-- Passwords come from sqlcmd variables here and go into the connector's password files
-- (mode 0600) or environment; never into connector.toml, never into source control.
--
-- Principles:
--   * One login per policy role's privilege level, not per person: the connector verifies the
--     person's token and tells SQL Server who it is through SESSION_CONTEXT (examples/rls).
--   * Read-only roles get SELECT on exactly the schema/tables they need: the connector's
--     read-only check is defence in depth; SQL Server's permissions are the guarantee.
--   * No sysadmin/db_owner, no ALTER/CONTROL, no EXECUTE on system procedures beyond defaults.
--   * CHECK_POLICY = ON applies the Windows password policy.

USE [master];
GO
CREATE LOGIN [edgetds_reader]         WITH PASSWORD = N'$(READER_PW)',  DEFAULT_DATABASE = [Sales], CHECK_POLICY = ON, CHECK_EXPIRATION = OFF;
CREATE LOGIN [edgetds_writer]         WITH PASSWORD = N'$(WRITER_PW)',  DEFAULT_DATABASE = [Sales], CHECK_POLICY = ON, CHECK_EXPIRATION = OFF;
CREATE LOGIN [edgetds_rls_reader]     WITH PASSWORD = N'$(RLS_PW)',     DEFAULT_DATABASE = [Sales], CHECK_POLICY = ON, CHECK_EXPIRATION = OFF;
CREATE LOGIN [edgetds_support_reader] WITH PASSWORD = N'$(SUPPORT_PW)', DEFAULT_DATABASE = [Sales], CHECK_POLICY = ON, CHECK_EXPIRATION = OFF;
-- These logins need nothing on the server itself: no server roles, no VIEW SERVER STATE.
GO

USE [Sales];
GO
CREATE USER [edgetds_reader]         FOR LOGIN [edgetds_reader]         WITH DEFAULT_SCHEMA = [sales];
CREATE USER [edgetds_writer]         FOR LOGIN [edgetds_writer]         WITH DEFAULT_SCHEMA = [sales];
CREATE USER [edgetds_rls_reader]     FOR LOGIN [edgetds_rls_reader]     WITH DEFAULT_SCHEMA = [sales];
CREATE USER [edgetds_support_reader] FOR LOGIN [edgetds_support_reader] WITH DEFAULT_SCHEMA = [sales];
GO

-- analyst role (read_only = true): read the reporting schema, nothing else.
GRANT SELECT ON SCHEMA::[sales] TO [edgetds_reader];
DENY  SELECT ON [sales].[customer_secrets] TO [edgetds_reader];   -- a table nobody should read

-- sales_admin role (read_only = false): change orders, but not the schema, not other tables.
GRANT SELECT, INSERT, UPDATE ON [sales].[orders] TO [edgetds_writer];
GRANT SELECT ON [sales].[customers] TO [edgetds_writer];
-- no DELETE: orders are cancelled (UPDATE status), never removed

-- RLS logins: their grants are in examples/rls/rls.sql, next to the security policy.
GO

-- Check what each login can do (run as the DBA):
--   EXECUTE AS LOGIN = 'edgetds_reader';
--   SELECT * FROM fn_my_permissions(NULL, 'DATABASE');
--   REVERT;
