-- Row-level security keyed on the verified end user (SESSION_CONTEXT set by the connector).
-- Run as a DBA in the application database, after examples/sql/create-logins.sql:
--   sqlcmd -S sql01 -d Sales -i examples/rls/rls.sql
-- The connector sets these read-only keys before every query (connector/execute.py):
--   SESSION_CONTEXT(N'edgetds.sub')       the token's "sub"
--   SESSION_CONTEXT(N'edgetds.iss')       the token's issuer ("sub" is unique per issuer only)
--   SESSION_CONTEXT(N'edgetds.query_id')  for correlating with the audit log

CREATE SCHEMA rls AUTHORIZATION dbo;
GO

-- The rows: every order records which identity owns it (your application fills these in).
ALTER TABLE sales.orders ADD owner_iss nvarchar(256) NULL, owner_sub nvarchar(256) NULL;
GO
CREATE INDEX ix_orders_owner ON sales.orders (owner_iss, owner_sub);
GO

-- Members of this role (the support login) see every row; everyone else only their own.
CREATE ROLE rls_bypass;
GO

-- Inline table-valued predicate: SCHEMABINDING is required by security policies.
-- No session context (someone connected with the login directly, not through the connector)
-- means NULL = no rows: the predicate fails closed.
CREATE FUNCTION rls.fn_row_owner(@owner_iss nvarchar(256), @owner_sub nvarchar(256))
RETURNS TABLE
WITH SCHEMABINDING
AS RETURN
    SELECT 1 AS allowed
    WHERE (@owner_sub = CAST(SESSION_CONTEXT(N'edgetds.sub') AS nvarchar(256))
           AND @owner_iss = CAST(SESSION_CONTEXT(N'edgetds.iss') AS nvarchar(256)))
       OR IS_ROLEMEMBER(N'rls_bypass') = 1;
GO

CREATE SECURITY POLICY rls.orders_by_owner
    ADD FILTER PREDICATE rls.fn_row_owner(owner_iss, owner_sub) ON sales.orders,
    -- if a writing role is ever added: nobody inserts or moves rows into someone else's name
    ADD BLOCK PREDICATE rls.fn_row_owner(owner_iss, owner_sub) ON sales.orders AFTER INSERT,
    ADD BLOCK PREDICATE rls.fn_row_owner(owner_iss, owner_sub) ON sales.orders AFTER UPDATE
    WITH (STATE = ON, SCHEMABINDING = ON);
GO

-- The logins' database users only read (see create-logins.sql for the logins themselves).
GRANT SELECT ON sales.orders TO edgetds_rls_reader;
GRANT SELECT ON sales.orders TO edgetds_support_reader;
ALTER ROLE rls_bypass ADD MEMBER edgetds_support_reader;
GO

-- Try it as a DBA (what the connector does before a query):
--   EXECUTE AS USER = 'edgetds_rls_reader';
--   EXEC sp_set_session_context @key = N'edgetds.iss', @value = N'https://idp.example', @read_only = 1;
--   EXEC sp_set_session_context @key = N'edgetds.sub', @value = N'alice', @read_only = 1;
--   SELECT * FROM sales.orders;   -- only alice's rows
--   REVERT;
