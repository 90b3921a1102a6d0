"""The read-only check: smuggling attempts refused, legitimate SELECTs allowed, never raises."""

from __future__ import annotations

import pytest
import sqlglot
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlglot import exp

from connector._readonly import (
    _check_coverage,
    _check_lexemes,
    _check_tokens,
    _check_tree,
    _text_items,
    _tokenize,
    check_read_only,
    normalize_sql,
    sql_fingerprint,
)

# Statements an attacker would try, sqlglot's known misreadings of T-SQL (IF/BEGIN TRY/OPENROWSET/
# NEXT VALUE FOR), and what attack testing found.
REFUSED = [
    "DELETE FROM orders",
    "delete orders where 1=1",
    "UPDATE orders SET total = 0",
    "INSERT INTO orders (id) VALUES (1)",
    "INSERT orders SELECT * FROM orders",
    "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE;",
    "EXEC sp_who",
    "EXECUTE ('DELETE FROM orders')",
    "exec xp_cmdshell 'whoami'",
    "sp_executesql N'DELETE FROM t'",
    "SELECT * INTO stolen FROM orders",
    "SELECT id INTO #tmp FROM orders",
    "WITH x AS (SELECT 1 AS a) DELETE FROM orders",
    "WITH x AS (SELECT 1 AS a) UPDATE orders SET total = 0",
    "WITH x AS (DELETE FROM orders OUTPUT deleted.id) SELECT * FROM x",
    "SELECT 1; DELETE FROM orders",
    "SELECT 1 DELETE FROM orders",
    "SELECT 1\nGO\nDELETE FROM orders",
    "SELECT 1; SELECT 2",
    "SELECT 1 /* harmless */; DELETE FROM orders -- hidden",
    "SELECT 1 -- comment\n; DELETE FROM orders",
    "SELECT 1 /* ' */ DELETE FROM orders /* ' */",
    "EXECUTE AS USER = 'dbo'; SELECT 1",
    "EXECUTE AS LOGIN = 'sa'",
    "SELECT 1; REVERT",
    "REVERT",
    "SETUSER 'dbo'",
    "SELECT * FROM OPENROWSET(BULK 'C:\\secrets.txt', SINGLE_CLOB) AS x",
    "SELECT * FROM OPENROWSET('SQLNCLI', 'Server=evil;', 'SELECT 1')",
    "SELECT * FROM OPENQUERY(linked, 'DELETE FROM t')",
    "SELECT * FROM OPENDATASOURCE('SQLNCLI', 'Data Source=evil').db.dbo.t",
    "SELECT * FROM OPENXML(@h, '/root')",
    "IF 1 = 1 DELETE FROM orders",
    "IF (SELECT COUNT(*) FROM t) > 0 SELECT 1 ELSE DELETE FROM t",
    "WHILE 1 = 1 SELECT 1",
    "BEGIN TRY SELECT 1 END TRY BEGIN CATCH END CATCH",
    "BEGIN TRAN; DELETE FROM t; COMMIT",
    "WAITFOR DELAY '00:00:10'",
    "SELECT 1 WAITFOR DELAY '00:00:10'",
    "SELECT NEXT VALUE FOR dbo.seq",
    "DECLARE @x INT; SELECT @x",
    "SET ROWCOUNT 0",
    "USE master",
    "DROP TABLE orders",
    "ALTER TABLE orders ADD x INT",
    "CREATE TABLE t (id INT)",
    "TRUNCATE TABLE orders",
    "GRANT SELECT ON t TO public",
    "REVOKE SELECT ON t FROM public",
    "DENY SELECT ON t TO public",
    "SHUTDOWN WITH NOWAIT",
    "KILL 52",
    "DBCC CHECKDB",
    "RECONFIGURE",
    "BACKUP DATABASE db TO DISK = 'x'",
    "RESTORE DATABASE db FROM DISK = 'x'",
    "BULK INSERT t FROM 'x'",
    "GOTO done",
    "RAISERROR('x', 16, 1)",
    "THROW 50000, 'x', 1",
    "SELECT * FROM orders WITH (TABLOCKX, HOLDLOCK)",
    "SELECT * FROM orders WITH (UPDLOCK)",
    "RECEIVE TOP (1) * FROM dbo.queue",
    "(SELECT 1)",
    # Lexing disagreements: where a -- comment or a string ends must not be in doubt.
    "SELECT 1 --\r' \n DELETE FROM orders --'",  # lone CR: sqlglot ends the comment there
    "SELECT 1 --\u2028 '\n DELETE FROM orders --'",
    "SELECT 1 --\x0b '\nDELETE FROM orders --'",
    "SELECT 'a\x00' FROM t",
    "SELECT 'a\\' ; DELETE FROM orders --'",  # backslash is no escape in T-SQL
    "SELECT N'a\\' DELETE FROM orders --'",
    "SELECT [a\\] FROM t; DELETE FROM orders --]",
    # SQL Server needs no ";" and takes a lone # or @ as a name: what follows is a statement.
    "SELECT 1 # DELETE FROM customers WHERE id = 1",
    "SELECT 1 # REVERT",
    "SELECT 1 # SHUTDOWN",
    "SELECT 1 #\nDELETE FROM orders WHERE id = 1",
    "SELECT 1 ## DELETE FROM orders",
    "SELECT 1 @ DELETE FROM orders",
    "SELECT 1 @@ DELETE FROM orders",
    "SELECT 1 #\r\nREVERT",
    "SELECT 1 # /* c */ SHUTDOWN",
    "SELECT 1 # -- c\nSHUTDOWN",
    "SELECT # FROM orders",
    "SELECT 1 #",
    "SELECT 1 AS # ",
    "SELECT 1 ### x",
    "SELECT 1 #@x",
    "SELECT @1",
    # $ and currency signs start money literals; \\ is a currency sign to SQL Server.
    "SELECT $DELETE FROM orders",
    "SELECT 1 $ DELETE FROM orders",
    "SELECT $1",
    "SELECT \u20acDELETE FROM orders",
    "SELECT a\u00a3DELETE FROM orders",
    "SELECT 1 \\ DELETE FROM orders",
    "SELECT {fn CURDATE()}",
    # A 0x literal running into letters; words and numbers run together.
    "SELECT 0x1SHUTDOWN",
    "SELECT 0xZZ",
    "SELECT 1DELETE FROM orders",
    "SELECT 1e5REVERT",
    "SELECT 1#x",
    # Unicode spaces and invisible characters: SQL Server and sqlglot may split words differently.
    "SELECT 1\u00a0DELETE FROM orders",
    "SELECT 1 x\u200bSHUTDOWN",
    "SELECT 1 x\u3000REVERT",
    "SELECT 1 --\u0085 \nSELECT 2",
    "SELECT 1 AS x\x1cDELETE FROM orders",
    "SELECT 1 AS x\ufeff",
    "SELECT N'a\x85' AS s",  # a control character is refused even inside a string
    "SELECT 1 -- note\u2028DELETE FROM orders",
    # Reserved keywords are never names to SQL Server (CLOSE/OPEN/FETCH start statements).
    "SELECT 1 close",
    "SELECT open FROM prices",
    "SELECT 1 AS fetch",
    "SELECT t.file FROM t",
    "SELECT 1 COLLATE CLOSE",  # a collation name sqlglot keeps as a word
    "SELECT 1 CLUSTERED INDEX",
    # No separator needed: a second statement right after the first.
    "SELECT 1 SELECT 2",
    "SELECT 1 (SELECT 2)",
    "SELECT 1 WITH x AS (SELECT 2) SELECT * FROM x",
    "SELECT 1 /* a /* nested */ still a comment */ DELETE FROM orders",
    # Comment markers inside the other kind of comment: which one wins decides where it ends.
    "SELECT 1 /* -- /* \n */ DELETE FROM orders -- */",
    "SELECT 1 -- */ \n /* x */",
    "SELECT 1 /* -- */",
    "SELECT 1 -- /* not opened?\nFROM t",
    # Overlapping comment markers: sqlglot reads the "/" of "*/*" again as an opener, so to it
    # all this is one comment and an alias; SQL Server ends the comment before DELETE.
    'SELECT 1 /* /* */* */ DELETE FROM orders SELECT 2 AS "*/" -- "',
    "SELECT 1 /*/ x */",
    "SELECT 1 /* a /* b */*/ */",
    # "{# #}" is a template comment to sqlglot, code ("{" an ODBC escape) to SQL Server.
    "SELECT 1 {# DELETE FROM orders #}",
    "SELECT 1 {##}",
    # A four-part name reads through a linked server, as the remote login it maps to.
    "SELECT * FROM srv.db.dbo.orders",
    "SELECT o.id FROM [srv].[db].[dbo].[orders] AS o JOIN customers c ON c.id = o.customer_id",
    "SELECT * FROM srv...orders",
    # SQL Server's name letters are Unicode 3.2's, within the Basic Multilingual Plane.
    "SELECT 1 AS x\u2c65DELETE",
    "SELECT 1 AS \U0001d400",
    # Full-width (compatibility) letters of a keyword: refused, in case SQL Server folds them.
    "SELECT 1 \uff24\uff25\uff2c\uff25\uff34\uff25 FROM orders",
    "SELECT 1 AS \uff43\uff4c\uff4f\uff53\uff45",
    # Other dialects' operators: sqlglot reads "-|-" then a string, SQL Server "-", "|" and a
    # -- comment; "#>" holds a lone # (a name to SQL Server).
    "SELECT 1 -|--'\nDELETE FROM orders --'",
    "SELECT doc #>> 'a' FROM t",
    "SELECT 1 #> 2",
    "SELECT 1 WHERE 1 == 1",
    "SELECT x := 1",
    "SELECT 1 WHERE 1 = ?",
    "SELECT 1 {%- x %}",
    # sqlglot's numbers that SQL Server reads as a shorter number and a name (or as no name).
    "SELECT 1e FROM t",
    "SELECT 1.E AS x",
    "SELECT 1 .1e.",
    "SELECT 0x1_1",
    "SELECT 1 .0x1",
    "SELECT 1 .1.E5",  # sqlglot: ".", then 1.E5; SQL Server: .1, ".", then the name E5
    'SELECT N"x"',
    "SELECT a < \u0661DELETE",
    "SELECT 1 \u136bSELECT",  # an Ethiopic digit: No today, Nd (no name start) in Unicode 3.2
    "",
    "   ",
    "-- only a comment",
    "/* unterminated comment",
    "SELECT 'unterminated string",
    "SELECT [unterminated",
    "SELEKT * FROM t",
    "SELECT * FROM",
    # sqlglot reads a SELECT without parentheses as a table or an argument; SQL Server reads a
    # syntax error there, or a second statement (the differential test found the first one).
    "SELECT id FROM customers,SELECT 2",
    "SELECT * FROM SELECT 1",
    "SELECT id FROM a JOIN SELECT 2",
    "SELECT id FROM a LEFT JOIN SELECT 2 ON 1 = 1",
    "SELECT id FROM a CROSS APPLY SELECT 2",
    "SELECT id FROM a OUTER APPLY SELECT 2 x",
    "SELECT id FROM a, SELECT 1 UNION SELECT 2",
    "SELECT id FROM customers, WITH x AS (SELECT 1) SELECT * FROM x",  # sqlglot hoists the WITH
    "SELECT ABS(SELECT 1)",
    # OFFSET n without ROW(S): sqlglot reads paging, tdslite (as SQL Server) ends the SELECT there
    # and starts a FETCH statement (the structured generator found it).
    "SELECT 1 FROM t ORDER BY id OFFSET @p2ROWS FETCH FIRST 5 ROWS ONLY",
    "SELECT 1 FROM t ORDER BY id OFFSET 2 FETCH NEXT 5 ROWS ONLY",
    "SELECT 1 FROM t ORDER BY id OFFSET 2 + ROWS FETCH NEXT 5 ROWS ONLY",
    # A name as a side of UNION/EXCEPT/INTERSECT: sqlglot reads a column, SQL Server a procedure
    # call when it starts the batch (the structured generator found the first one).
    'SELECTt1 . "total" EXCEPT SELECT 1',
    "x EXCEPT SELECT 1",
    "(x) UNION SELECT 1",
    "SELECT 1 WHERE 1 IN (x UNION SELECT 1)",
    # sqlglot skips a leading AS or + (SELECT 1 to it); tdslite, as SQL Server, starts a
    # statement AS (the structured generator found the first one).
    '/* v1 */ AS SELECT"total" AS t1 -- c\n, 0x0 OPTION ( MAXDOP 1 -- c\n)',
    "AS SELECT 1",
    "+ SELECT 1",
    "+ WITH x AS (SELECT 1) SELECT 1",
    # A reserved keyword before "(": a call to sqlglot, a statement (CLOSE, OPEN) to tdslite as
    # to SQL Server (the structured generator found the first two).
    "/* v1 */ SELECT TOP( -- c\n10 ) PERCENT /* c */ COUNT  ( */**/), ( 2E+5 )/**/, CLOSE (\tc . "
    "-- c\nid ) -- end",
    '\nSELECT name AS t1 WHERE id IN/**/OPEN (\n1  , 2 ) ORDER\nBY\t"total" ASC/**/OFFSET/**/10 '
    "ROWS FOR XML PATH",
    "SELECT CLOSE(1)",
    "SELECT 1 WHERE OPEN(1) = 1",
    "SELECT UNION(1)",
]

ALLOWED = [
    "SELECT 1",
    "SELECT 1 WHERE EXISTS (SELECT 1) AND 2 > ALL (SELECT 1) AND 3 > SOME (SELECT 1)",
    "SELECT 1 WHERE NOT EXISTS (SELECT 1 UNION SELECT 2)",
    "(SELECT 1) UNION (SELECT 2)",
    "SELECT x FROM t WHERE x > .5 OR x < .5e1",
    "SELECT a FROM t ORDER BY (SELECT NULL)",
    "SELECT 1;",
    "select id, total from orders where id = @id",
    "SELECT [delete], [update] FROM [insert] WHERE [exec] = 'DELETE FROM orders; EXEC x'",
    "SELECT note FROM t WHERE note = N'IF 1=1 DELETE FROM t'",
    'SELECT "drop" FROM t',
    "SELECT * FROM orders -- DELETE FROM orders",
    "SELECT * FROM orders /* ; DROP TABLE orders */",
    "SELECT TOP 10 * FROM dbo.orders ORDER BY total DESC",
    "SELECT * FROM t ORDER BY id OFFSET 10 ROWS FETCH NEXT 5 ROWS ONLY",
    "SELECT CASE WHEN total > 10 THEN 'big' ELSE 'small' END AS size FROM orders",
    "WITH big AS (SELECT * FROM orders WHERE total > 100) SELECT COUNT(*) FROM big",
    "WITH a AS (SELECT 1 AS x), b AS (SELECT x FROM a) SELECT * FROM b",
    "SELECT id FROM a UNION ALL SELECT id FROM b",
    "SELECT id FROM a INTERSECT SELECT id FROM b",
    "SELECT id FROM a EXCEPT SELECT id FROM b",
    "SELECT * FROM orders WITH (NOLOCK) WHERE id IN (SELECT id FROM paid)",
    "SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.customer_id",
    "SELECT customer_id, SUM(total) FROM orders GROUP BY customer_id HAVING SUM(total) > 5",
    "SELECT * FROM t WHERE name = @delete AND kind = @exec",
    "SELECT ISNULL(x, 0), CAST(y AS DECIMAL(18, 4)), GETUTCDATE() FROM t",
    "SELECT id FROM orders FOR JSON PATH",
    "SELECT ROW_NUMBER() OVER (ORDER BY id) AS n FROM orders",
    "SELECT 'it''s DELETE FROM orders --' AS quoted",  # doubled quote: still one string
    "SELECT [a]] DELETE FROM orders --] FROM t",  # doubled bracket: still one identifier
    "SELECT id\r\nFROM orders -- note\r\nWHERE id = 1",
    "SELECT id\tFROM orders /* a /* nested */ comment */",
    "SELECT 1 /* /* */ DELETE FROM orders */",  # comments nest: all of it is one comment
    "-- a report\n/* v2: /* nested */ */ SELECT 1 -- trailing note",
    "SELECT * FROM #tmp JOIN ##shared s ON s.id = #tmp.id WHERE #tmp.x = @x",
    "SELECT @@ROWCOUNT AS n, @@VERSION AS v",
    "SELECT a#b, a$b, a@b FROM t",
    'SELECT [close], [open], "fetch" FROM prices',
    "SELECT USER, CURRENT_USER, SESSION_USER, SYSTEM_USER, CURRENT_TIMESTAMP",
    "SELECT N'caf\u00e9 \u20ac' AS price, Gr\u00f6\u00dfe FROM t",
    # inside a string or quoted name a Unicode space or joiner is data (it ends at its quote)
    "SELECT N'a\u00a0b \U0001f469\u200d\U0001f4bb\u2028' AS s, [x\u3000y] FROM t",
    "SELECT DATEPART(yy, d), DATEADD(dd, 1, d), DATEDIFF(mi, d, e) FROM t",
    "SELECT id FROM t ORDER BY id OFFSET 3 ROWS FETCH NEXT 2 ROWS ONLY",
    "SELECT .5 AS half, 1.e3 AS k, 0x1F AS b",
    "SELECT id FROM t WITH (NOLOCK) FOR JSON PATH",
    "SELECT name COLLATE Latin1_General_CI_AS AS n FROM t ORDER BY name DESC",
    # What ORMs and query builders send (Kysely, Prisma, Entity Framework, Sequelize).
    "select top(@p1) [id], [name] from [users] where [id] = @p2",
    "SELECT [dbo].[User].[id] FROM [dbo].[User] WHERE ([dbo].[User].[email] = @P1) ORDER BY "
    "[dbo].[User].[id] ASC OFFSET @P2 ROWS FETCH NEXT @P3 ROWS ONLY",
    "select [u].[id], count(*) as [n] from [users] as [u] left join [posts] as [p] on "
    "[p].[user_id] = [u].[id] group by [u].[id] having count(*) > @p1 order by [n] desc "
    "offset @p2 rows fetch next @p3 rows only",
    "SELECT TOP(1) [u].[Id], [u].[Name] FROM [Users] AS [u] WHERE [u].[Id] = @__id_0",
    "SELECT [Extent1].[Id] AS [Id] FROM [dbo].[Users] AS [Extent1] WHERE [Extent1].[Id] = "
    "@p__linq__0",
    # NOLOCK/READUNCOMMITTED read uncommitted rows but take no locks that block anyone: a read.
    "select 1 as [a] from [t] with (nolock)",
    "SELECT * FROM t WITH (INDEX(ix_t), FORCESEEK, READPAST, ROWLOCK)",
    "SELECT TRY_CAST(x AS INT), TRY_CONVERT(INT, x), IIF(a > 1, 'y', 'n') FROM t",
    "SELECT * FROM OPENJSON(@j) WITH (a INT '$.a', b NVARCHAR(50) '$.b')",
    "SELECT a.id, b.x FROM a CROSS APPLY (SELECT TOP 1 x FROM b WHERE b.a = a.id) AS b",
    "SELECT geometry::STGeomFromText('POINT(1 1)', 0) AS g, hierarchyid::GetRoot() AS r",
    # Window frames, ordered-set aggregates, JSON and FORMAT (sqlglot folds or rewrites parts).
    "SELECT SUM(x) OVER (PARTITION BY g ORDER BY d ROWS BETWEEN UNBOUNDED PRECEDING AND "
    "CURRENT ROW) AS running FROM t",
    "SELECT COUNT(*) OVER (ORDER BY d RANGE BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING) FROM t",
    "SELECT STRING_AGG(name, ',') WITHIN GROUP (ORDER BY name) AS names FROM t",
    "SELECT PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY x) OVER (PARTITION BY g) FROM t",
    "SELECT JSON_VALUE(doc, '$.a') AS a, JSON_QUERY(doc, '$.b.c[0]') AS b, ISJSON(doc) FROM t "
    "FOR JSON PATH, ROOT('x')",
    "SELECT FORMAT(d, 'yyyy-MM-dd') AS day, FORMAT(n, 'N2') AS money, d AT TIME ZONE 'UTC' AS u, "
    "CONCAT_WS('-', a, b) AS ab, TRIM(x) AS tx FROM t",
    "SELECT 1.e3 AS k, 2E+5 AS m, 1e-3 AS milli",
    "SELECT 1 << 2, 8 >> 1, ~1, 1 ^ 2, 1 % 2, 1 & 3 | 4, a || b FROM t WHERE 1 <> 2 AND 1 != 3",
    "SELECT @\uff43\uff4c\uff4f\uff53\uff45 AS v",  # a variable: SQL Server reads no keyword
    # Three-part names stay on this server (the role's login decides), as does db..t.
    "SELECT db.dbo.t.c FROM db.dbo.t JOIN db..u ON u.id = t.id",
    "SELECT 1 /**/ AS a /****/ -- banner\n/* a /* b */ c */",
    "SELECT 1 AS Gr\u00f6\u00dfe, 2 AS \u0414\u0430\u043d\u043d\u044b\u0435, 3 AS \u540d\u524d",
]


@pytest.mark.parametrize("sql", REFUSED)
def test_refused(sql: str) -> None:
    verdict = check_read_only(sql)
    assert not verdict.allowed, sql
    assert not verdict
    assert verdict.reason


@pytest.mark.parametrize("sql", ALLOWED)
def test_allowed(sql: str) -> None:
    verdict = check_read_only(sql)
    assert verdict.allowed, verdict.reason
    assert verdict.reason == ""


def test_reason_names_the_keyword_not_the_values() -> None:
    verdict = check_read_only("SELECT 'secret-value-42' AS x; DELETE FROM t WHERE k = 'pw123'")
    assert "secret-value-42" not in verdict.reason
    assert "pw123" not in verdict.reason
    assert "DELETE" in check_read_only("DELETE FROM t WHERE k = 'pw123'").reason
    assert "NEXT VALUE FOR" in check_read_only("SELECT NEXT VALUE FOR s").reason


@pytest.mark.parametrize(
    "sql",
    [
        "IF 1 = 1 DELETE FROM t",  # parses to an IfBlock, not a SELECT
        "SELECT * INTO x FROM t",
        "SELECT NEXT VALUE FOR s",
        "WITH x AS (SELECT 1 AS a) DELETE FROM t",
        "SELECT * FROM OPENQUERY(s, 'x')",
        "SELECT 1 UNION SELECT * INTO y FROM t",
    ],
)
def test_tree_check_alone_refuses(sql: str) -> None:
    # Defence in depth: even without the token deny-list, the tree check refuses these.
    tree = sqlglot.parse(sql, read="tsql")[0]
    assert tree is not None
    assert not _check_tree(tree).allowed


@pytest.mark.parametrize("sql", ["SELECT 1 /* x */ ; DELETE FROM t", "IF 1=1 DELETE FROM t"])
def test_token_check_alone_refuses(sql: str) -> None:
    tokens = _tokenize(sql)
    assert isinstance(tokens, list)
    assert not _check_tokens(tokens).allowed


VOCAB = [
    "SELECT", "FROM", "WHERE", "DELETE", "INSERT", "INTO", "UPDATE", "SET", "EXEC", "IF", "BEGIN",
    "END", "WITH", "AS", "UNION", "ALL", "(", ")", ",", ";", "*", "=", "1", "@p", "#t", "t", "x",
    "[delete]", "'DELETE'", "N'x'", "/* c */", "-- c\n", "'", "[", "/*", "OPENROWSET", "NEXT",
    "VALUE", "FOR", "TOP", "ORDER", "BY", "GO", "CASE", "WHEN", "THEN", "ELSE", "OVER", "\n",
]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(VOCAB), max_size=25))
def test_token_soup_never_raises(words: list[str]) -> None:
    sql = " ".join(words)
    verdict = check_read_only(sql)
    assert isinstance(verdict.allowed, bool)
    if verdict.allowed:  # whatever it allows, sqlglot sees as exactly one SELECT-like statement
        statements = [s for s in sqlglot.parse(sql, read="tsql") if s]
        assert len(statements) == 1
        assert isinstance(statements[0], exp.Select | exp.Union | exp.Intersect | exp.Except)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_raises(sql: str) -> None:
    assert isinstance(check_read_only(sql).allowed, bool)
    assert isinstance(sql_fingerprint(sql), str)


def test_fingerprint_groups_literals_and_layout() -> None:
    a = "SELECT id FROM t WHERE name = 'alice' AND n = 1"
    b = "select id\n  from t   where name = 'bob' and n = 42 -- note"
    assert sql_fingerprint(a) == sql_fingerprint(b)
    assert sql_fingerprint(a) != sql_fingerprint("SELECT id FROM u WHERE name = 'alice' AND n = 1")
    assert "alice" not in normalize_sql(a)
    assert normalize_sql("SELECT [x] FROM t") == "SELECT [x] FROM t"


def test_each_layer_alone_refuses_the_lone_sigil() -> None:
    # Defence in depth: the token deny-list no longer skips a word after a sigil it is not
    # glued to, and the coverage check sees the parser merge "#" and "DELETE" into one name.
    sql = "SELECT 1 # DELETE FROM customers WHERE id = 1"
    tokens = _tokenize(sql)
    assert isinstance(tokens, list)
    assert not _check_lexemes(sql, tokens).allowed
    assert "DELETE" in _check_tokens(tokens).reason
    tree = sqlglot.parse(sql, read="tsql")[0]
    assert tree is not None
    assert _check_tree(tree).allowed  # the tree alone looks harmless
    coverage = _check_coverage(tree, _text_items(tokens))
    assert not coverage.allowed
    assert "merged" in coverage.reason


@pytest.mark.parametrize(
    ("sql", "word"),
    [
        ("SELECT 1 LIMIT 1", "TOP"),  # no LIMIT in T-SQL; sqlglot makes it the Limit of a TOP
        ("SELECT 1 close", "CLOSE"),  # reserved: a statement to SQL Server, an alias to sqlglot
        ("SELECT 1 #", "dropped"),  # sqlglot drops the lone # SQL Server reads as a name
    ],
)
def test_coverage_alone_refuses_misreadings(sql: str, word: str) -> None:
    tokens = _tokenize(sql)
    assert isinstance(tokens, list)
    tree = sqlglot.parse(sql, read="tsql")[0]
    assert tree is not None
    assert _check_tree(tree).allowed
    verdict = _check_coverage(tree, _text_items(tokens))
    assert not verdict.allowed
    assert word in verdict.reason


def test_tree_check_refuses_a_fetch_that_is_a_cursor_statement() -> None:
    # SQL Server reads FETCH c as a cursor statement; sqlglot as a limit of the SELECT
    tree = sqlglot.parse("SELECT 1 FETCH c", read="tsql")[0]
    assert tree is not None
    assert "FETCH" in _check_tree(tree).reason
    ok = sqlglot.parse("SELECT id FROM t ORDER BY id OFFSET 1 ROWS FETCH NEXT 2 ROWS ONLY", "tsql")
    assert ok[0] is not None
    assert _check_tree(ok[0]).allowed


@pytest.mark.parametrize(
    "sql",
    [
        'SELECT 1 /* /* */* */ DELETE FROM orders SELECT 2 AS "*/" -- "',
        "SELECT 1 {# DELETE FROM orders #}",
    ],
)
def test_lexeme_check_alone_refuses_what_sqlglot_skips_and_sql_server_reads(sql: str) -> None:
    # sqlglot's tokens hide the DELETE in a comment, so the token and tree checks see one SELECT
    tokens = _tokenize(sql)
    assert isinstance(tokens, list)
    assert _check_tokens(tokens).allowed
    tree = sqlglot.parse(sql, read="tsql")[0]
    assert tree is not None
    assert _check_tree(tree).allowed
    assert _check_coverage(tree, _text_items(tokens)).allowed
    verdict = _check_lexemes(sql, tokens)
    assert not verdict.allowed
    assert "white space and comments" in verdict.reason
