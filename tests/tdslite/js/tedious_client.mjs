// A small Node client for tdslite, run by tests/tdslite/test_client_tedious.py.
// How to poke it: node tests/tdslite/js/tedious_client.mjs '<plan json>'
// The plan: {"host", "port", "user", "password", "database"?, "encrypt"?, "tdsVersion"?
//   (tedious's "7_1" .. "7_4"), "steps": [{"sql",
//   "params": [{"name", "type" (a tedious TYPES name), "value", "options"?}],
//   "cancelAfterMs"?, "cancelOnInfo"? (cancel when the first INFO message arrives)}, or
//   {"proc": name, "params", "outputs": [{"name", "type", "value"?}]} (callProcedure; gives
//   "outputs" {name: value} and "returnStatus" too), or {"reset": true}, or {"tx": "begin" |
//   "commit"|"rollback"|"save", "name"?} (tedious's Transaction Manager requests), or
//   {"state": true}, or {"bulk": {"table", "options" (newBulkLoad's), "columns": [{"name",
//   "type", "options"}], "rows": [[...]]}}]}.
// A "tx" step gives {"tx": error message or null}; a "state" step gives what tedious believes:
// {"inTransaction", "descriptor" (hex of the descriptor it would send)}.
// Prints one JSON object: {"connected": true, "steps": [{"rows": [...], "rowCount", "error"?,
//   "infos": [{"number", "message", "class"}] (INFO messages: PRINT, RAISERROR 0-10, 3621)}]}.
// Values come back JSON-friendly: Date -> ISO string, Buffer -> {"hex": ...}.
// 100 ns precision: a temporal param value {"iso", "nanosecondDelta"} sets tedious's
// nanosecondDelta (seconds past the millisecond); a plan with "precise": true returns temporal
// values as {"iso", "nanosecondsDelta"} (tedious reports the digits past the millisecond there).
import { Connection, Request, TYPES } from "tedious";

// tedious 20 wants Node >= 22 and calls Promise.withResolvers; this machine has Node 20.
if (typeof Promise.withResolvers !== "function") {
  Promise.withResolvers = function withResolvers() {
    let resolve;
    let reject;
    const promise = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}

const plan = JSON.parse(process.argv[2]);

function toJson(value) {
  if (value instanceof Date && plan.precise) {
    return { iso: value.toISOString(), nanosecondsDelta: value.nanosecondsDelta ?? 0 };
  }
  if (value instanceof Date) return value.toISOString();
  if (Buffer.isBuffer(value)) return { hex: value.toString("hex") };
  if (typeof value === "bigint") return value.toString();
  return value;
}

function fromJson(type, value) {
  if (value === null) return null;
  if (["Date", "DateTime", "DateTime2", "DateTimeOffset", "SmallDateTime", "Time"].includes(type)) {
    if (typeof value === "object") {
      const date = new Date(value.iso);
      date.nanosecondDelta = value.nanosecondDelta;
      return date;
    }
    return new Date(value);
  }
  if (["VarBinary", "Binary"].includes(type)) return Buffer.from(value.hex, "hex");
  // a table-valued parameter: {"name", "schema", "columns": [{"name", "type", ...}], "rows"}
  if (type === "TVP") {
    const columns = value.columns.map((c) => ({ ...c, type: TYPES[c.type] }));
    const rows = value.rows.map((row) => row.map((v, i) => fromJson(value.columns[i].type, v)));
    return { ...value, columns, rows };
  }
  return value;
}

function connect() {
  return new Promise((resolve, reject) => {
    const connection = new Connection({
      server: plan.host,
      authentication: { type: "default", options: { userName: plan.user, password: plan.password } },
      options: {
        port: plan.port,
        database: plan.database,
        encrypt: plan.encrypt ?? false,
        tdsVersion: plan.tdsVersion ?? "7_4",
        trustServerCertificate: true,
        // generous: the suite also runs on busy CI machines
        connectTimeout: 20000,
        requestTimeout: 20000,
        cancelTimeout: 20000,
      },
    });
    connection.on("connect", (err) => (err ? reject(err) : resolve(connection)));
    connection.connect();
  });
}

function runStep(connection, step) {
  return new Promise((resolve) => {
    const rows = [];
    const outputs = {};
    let returnStatus;
    const infos = [];
    const onInfo = (info) => {
      infos.push({ number: info.number, message: info.message, class: info.class });
      if (step.cancelOnInfo && infos.length === 1) connection.cancel();
    };
    connection.on("infoMessage", onInfo);
    const request = new Request(step.proc ?? step.sql, (err, rowCount) => {
      connection.removeListener("infoMessage", onInfo);
      const out = { rows, rowCount };
      if (step.proc) Object.assign(out, { outputs, returnStatus });
      if (infos.length) out.infos = infos;
      if (err) {
        // several errors in one batch come as an AggregateError: the first one, and all numbers
        const all = err.errors ?? [err];
        const first = all[0];
        out.error = { number: first.number, class: first.class, state: first.state };
        out.error.message = first.message;
        out.error.numbers = all.map((e) => e.number);
      }
      resolve(out);
    });
    for (const p of step.params ?? []) {
      request.addParameter(p.name, TYPES[p.type], fromJson(p.type, p.value), p.options ?? {});
    }
    for (const p of step.outputs ?? []) {
      request.addOutputParameter(p.name, TYPES[p.type], fromJson(p.type, p.value ?? null), p.options ?? {});
    }
    request.on("row", (columns) => {
      rows.push(columns.map((c) => toJson(c.value)));
    });
    request.on("returnValue", (name, value) => {
      outputs[name] = toJson(value);
    });
    request.on("doneProc", (rowCount, more, status) => {
      if (status !== undefined) returnStatus = status;
    });
    if (step.proc) connection.callProcedure(request);
    else connection.execSql(request);
    if (step.cancelAfterMs !== undefined) {
      setTimeout(() => connection.cancel(), step.cancelAfterMs);
    }
  });
}

function bulkLoad(connection, bulk) {
  return new Promise((resolve) => {
    const load = connection.newBulkLoad(bulk.table, bulk.options ?? {}, (err, rowCount) => {
      resolve(err ? { error: { number: err.number, message: err.message } } : { rowCount });
    });
    for (const c of bulk.columns) load.addColumn(c.name, TYPES[c.type], c.options ?? {});
    const rows = bulk.rows.map((row) => row.map((v, i) => fromJson(bulk.columns[i].type, v)));
    connection.execBulkLoad(load, rows);
  });
}

function reset(connection) {
  return new Promise((resolve) => connection.reset((err) => resolve(err ? err.message : null)));
}

function transaction(connection, step) {
  const methods = {
    begin: "beginTransaction",
    commit: "commitTransaction",
    rollback: "rollbackTransaction",
    save: "saveTransaction",
  };
  return new Promise((resolve) =>
    connection[methods[step.tx]]((err) => resolve(err ? err.message : null), step.name ?? ""),
  );
}

const result = { connected: false, steps: [] };
let connection;
try {
  connection = await connect();
  result.connected = true;
  for (const step of plan.steps) {
    if (step.reset) {
      result.steps.push({ reset: await reset(connection) });
      continue;
    }
    if (step.tx) {
      result.steps.push({ tx: await transaction(connection, step) });
      continue;
    }
    if (step.bulk) {
      result.steps.push(await bulkLoad(connection, step.bulk));
      continue;
    }
    if (step.state) {
      const descriptor = connection.currentTransactionDescriptor().toString("hex");
      result.steps.push({ inTransaction: connection.inTransaction, descriptor });
      continue;
    }
    result.steps.push(await runStep(connection, step));
  }
} catch (err) {
  result.error = { message: err.message, code: err.code };
} finally {
  if (connection) connection.close();
}
process.stdout.write(JSON.stringify(result) + "\n");
