// prisma.js conversions: Prisma arguments -> SPEC.md 12.2 parameters, SPEC.md 12.1 values ->
// Prisma's ColumnTypes and values, SQL Server errors -> Prisma's mapped errors. The adapter with a
// generated Prisma Client against the real stack is tests/prisma/ (pytest).
import assert from "node:assert/strict";
import { test } from "node:test";

import { ColumnTypeEnum, DriverAdapterError } from "@prisma/driver-adapter-utils";

import { TunnelError } from "../src/client.js";
import { mapError, PrismaEdgeTds, resultSet, sqlServerError, toParam, toParams } from "../src/prisma.js";

const scalar = (scalarType, dbType) => ({ scalarType, arity: "scalar", dbType });

test("arguments become typed parameters named P1..Pn", () => {
  const params = toParams({ sql: "SELECT @P1, @P2", args: [7, "x"], argTypes: [scalar("int"), scalar("string")] });
  assert.deepEqual(params, { P1: { type: "int", value: 7 }, P2: { type: "nvarchar(max)", value: "x" } });
});

test("each Prisma scalar type binds as its SQL Server type", () => {
  const cases = [
    [9007199254740993n, scalar("bigint"), { type: "bigint", value: "9007199254740993" }],
    ["12", scalar("bigint"), { type: "bigint", value: "12" }],
    [2 ** 40, scalar("int"), { type: "bigint", value: 2 ** 40 }],
    [0.5, scalar("float"), { type: "float", value: 0.5 }],
    [0.5, scalar("float", "REAL"), { type: "real", value: 0.5 }],
    ["1234.5678", scalar("decimal"), { type: "decimal(8,4)", value: "1234.5678" }],
    ["-0.001", scalar("decimal"), { type: "decimal(3,3)", value: "-0.001" }],
    ["1e-7", scalar("decimal"), { type: "decimal(7,7)", value: "0.0000001" }],
    ["1.5e3", scalar("decimal"), { type: "decimal(4,0)", value: "1500" }],
    [1.5, scalar("decimal"), { type: "float", value: 1.5 }], // $queryRaw's JS number
    [true, scalar("boolean"), { type: "bit", value: true }],
    ["8e0e4b5c-7a3b-4c7e-9a53-0b1c2d3e4f50", scalar("uuid"), { type: "uniqueidentifier", value: "8e0e4b5c-7a3b-4c7e-9a53-0b1c2d3e4f50" }],
    ["AAH+/w==", scalar("bytes"), { type: "varbinary(max)", value: "AAH+/w==" }],
    [new Uint8Array([0, 1, 254, 255]), scalar("bytes"), { type: "varbinary(max)", value: "AAH+/w==" }],
    ["2026-01-02T03:04:05.678Z", scalar("datetime", "DATETIME2"), { type: "datetime2(7)", value: "2026-01-02T03:04:05.678" }],
    [new Date("2026-01-02T03:04:05.678Z"), scalar("datetime"), { type: "datetime2(7)", value: "2026-01-02T03:04:05.678" }],
    ["1815-12-10T00:00:00.000Z", scalar("datetime", "DATE"), { type: "date", value: "1815-12-10" }],
    ["1970-01-01T12:34:56.789Z", scalar("datetime", "TIME"), { type: "time(3)", value: "12:34:56.789" }],
    ["2026-01-02T03:04:05.678Z", scalar("datetime", "DATETIMEOFFSET"), { type: "datetimeoffset(3)", value: "2026-01-02T03:04:05.678Z" }],
    ["2026-01-02T03:04:05.678Z", scalar("datetime", "DATETIME"), { type: "datetime", value: "2026-01-02T03:04:05.678" }],
    ["{\"a\":1}", scalar("json"), { type: "nvarchar(max)", value: "{\"a\":1}" }],
    ["RED", scalar("enum"), { type: "nvarchar(max)", value: "RED" }],
    [null, scalar("bytes"), { type: "varbinary(max)", value: null }], // NULL nvarchar does not convert to varbinary
    [null, scalar("datetime", "DATE"), { type: "date", value: null }],
    [7, scalar("unknown"), 7],
    [7n, scalar("unknown"), { type: "bigint", value: "7" }],
    [null, scalar("unknown"), null],
  ];
  for (const [arg, argType, expected] of cases) assert.deepEqual(toParam(arg, argType), expected, `${String(arg)} as ${argType.scalarType}`);
});

test("lists and invalid dates are refused as invalid input", () => {
  for (const [arg, argType] of [
    [[1, 2], { scalarType: "int", arity: "list" }],
    ["not a date", scalar("datetime")],
  ]) {
    assert.throws(
      () => toParam(arg, argType),
      (error) => error instanceof DriverAdapterError && error.cause.kind === "InvalidInputValue",
    );
  }
});

function rows(columns, values) {
  return Object.assign(values, { columns: columns.map(([name, type]) => ({ name, type })) });
}

test("result values become what Prisma expects for each column type", () => {
  const set = resultSet(
    rows(
      [
        ["b", "bit"],
        ["i", "int"],
        ["n", "bigint"],
        ["d", "decimal"],
        ["m", "money"],
        ["r", "real"],
        ["f", "float"],
        ["s", "nvarchar"],
        ["x", "varbinary"],
        ["dt", "date"],
        ["t", "time"],
        ["ts", "datetime2"],
        ["o", "datetimeoffset"],
        ["u", "uniqueidentifier"],
      ],
      [
        [true, 1, "9007199254740993", "12.3400", "12.5000", 0.1, 0.25, "x", "AAH+/w==", "2024-02-29", "13:14:15.1234567", "2024-02-29T13:14:15.1234567", "2024-02-29T13:14:15.1234567+02:00", "8e0e4b5c-7a3b-4c7e-9a53-0b1c2d3e4f50"],
        [null, null, null, null, null, null, null, null, null, null, null, null, null, null],
      ],
    ),
  );
  const T = ColumnTypeEnum;
  assert.deepEqual(set.columnNames, ["b", "i", "n", "d", "m", "r", "f", "s", "x", "dt", "t", "ts", "o", "u"]);
  assert.deepEqual(set.columnTypes, [T.Boolean, T.Int32, T.Int64, T.Numeric, T.Double, T.Float, T.Double, T.Text, T.Bytes, T.Date, T.Time, T.DateTime, T.DateTime, T.Uuid]);
  assert.deepEqual(set.rows[0], [true, 1, "9007199254740993", "12.3400", 12.5, 0.1, 0.25, "x", new Uint8Array([0, 1, 254, 255]), "2024-02-29", "13:14:15.1234567", "2024-02-29T13:14:15.1234567Z", "2024-02-29T13:14:15.1234567+02:00", "8e0e4b5c-7a3b-4c7e-9a53-0b1c2d3e4f50"]);
  assert.deepEqual(set.rows[1], Array(14).fill(null));
});

test("a column type Prisma cannot read is UnsupportedNativeDataType", () => {
  assert.throws(
    () => resultSet(rows([["v", "sql_variant"]], [])),
    (error) => error instanceof DriverAdapterError && error.cause.kind === "UnsupportedNativeDataType" && error.cause.type === "sql_variant",
  );
});

test("SQL Server's errors become Prisma's mapped errors, with the names in their messages", () => {
  const cases = [
    [2627, "Violation of UNIQUE KEY constraint 'User_email_key'. Cannot insert duplicate key in object 'dbo.User'. The duplicate key value is (a@b).", { kind: "UniqueConstraintViolation", constraint: { index: "dbo.User" }, table: "User" }],
    [2601, "Cannot insert duplicate key row in object 'dbo.User' with unique index 'User_email_key'. The duplicate key value is (a@b).", { kind: "UniqueConstraintViolation", constraint: { index: "User_email_key" }, table: "User" }],
    [547, 'The INSERT statement conflicted with the FOREIGN KEY constraint "Post_authorId_fkey". The conflict occurred in database "db", table "dbo.User", column \'id\'.', { kind: "ForeignKeyConstraintViolation", constraint: { index: "Post_authorId_fkey" } }],
    [515, "Cannot insert the value NULL into column 'title', table 'db.dbo.Post'; column does not allow nulls. INSERT fails.", { kind: "NullConstraintViolation", constraint: { fields: ["title"] } }],
    [2628, "String or binary data would be truncated in table 'db.dbo.T', column 'c'. Truncated value: 'ab'.", { kind: "LengthMismatch", column: "c" }],
    [208, "Invalid object name 'dbo.Missing'.", { kind: "TableDoesNotExist", table: "dbo.Missing" }],
    [207, "Invalid column name 'nope'.", { kind: "ColumnNotFound", column: "nope" }],
    [1205, "Transaction (Process ID 52) was deadlocked on lock resources with another process and has been chosen as the deadlock victim. Rerun the transaction.", { kind: "TransactionWriteConflict" }],
    [8115, "Arithmetic overflow error converting expression to data type int.", { kind: "ValueOutOfRange", cause: "Arithmetic overflow error converting expression to data type int." }],
    [102, "Incorrect syntax near '.'.", { kind: "mssql", code: 102, message: "Incorrect syntax near '.'." }],
  ];
  for (const [number, message, expected] of cases) assert.deepEqual(sqlServerError(number, message), expected, String(number));
});

test("mapError: sql.error by number, session ends and timeouts by kind, other refusals stay TunnelErrors", () => {
  const sql = mapError(new TunnelError({ code: "sql.error", message: "Invalid column name 'nope'.", sql: { number: 207, state: 1, class: 16 } }, 422));
  assert.ok(sql instanceof DriverAdapterError);
  assert.deepEqual(sql.cause, { kind: "ColumnNotFound", column: "nope", originalCode: "207", originalMessage: "Invalid column name 'nope'." });
  const ended = mapError(new TunnelError({ code: "session.ended", message: "the session has ended (idle_timeout)" }, 410));
  assert.equal(ended.cause.kind, "TransactionAlreadyClosed");
  assert.equal(mapError(new TunnelError({ code: "query.timeout", message: "too slow" }, 504)).cause.kind, "SocketTimeout");
  const denied = new TunnelError({ code: "policy.denied", message: "no role" }, 403);
  assert.equal(mapError(denied), denied);
  const other = new TypeError("x");
  assert.equal(mapError(other), other);
});

test("the factory is a sqlserver adapter; connection info and unknown isolation levels", async () => {
  const factory = new PrismaEdgeTds({ tunnel: "demo", url: "https://relay.example", token: "t", schema: "app" });
  assert.equal(factory.provider, "sqlserver");
  assert.equal(factory.adapterName, "edgetds");
  const adapter = await factory.connect();
  assert.deepEqual(adapter.getConnectionInfo(), { schemaName: "app", maxBindValues: 2098, supportsRelationJoins: false });
  await assert.rejects(
    adapter.startTransaction("CHAOS"),
    (error) => error instanceof DriverAdapterError && error.cause.kind === "InvalidIsolationLevel",
  );
  assert.throws(() => new PrismaEdgeTds({}), TypeError);
});
