// The shared protocol vectors (protocol/vectors/*.json, also run by tests/protocol/): the Worker's
// codec agrees with Python byte for byte; HELLOs and attestations reproduce exactly and verify.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { b64url, canonicalJson, CHECKPOINT_CONTEXT, HELLO_CONTEXT, loadRelayKey, makeAttestation, QUERY_CONTEXT, sha256Hex, signHello, verifyConnectorToken, verifySigned } from "../src/auth.js";
import { checkCheckpoint, creditPayload, decodePayload, encodeFrame, FrameReader, FRAME_NAMES, FrameType, parseFrame, ProtocolError } from "../src/frames.js";
import { Connection } from "../src/connection.js";

const DIR = new URL("../../../protocol/vectors/", import.meta.url);
const load = (name) => JSON.parse(readFileSync(new URL(name, DIR), "utf8"));
const hex = (bytes) => Buffer.from(bytes).toString("hex");
const unhex = (text) => new Uint8Array(Buffer.from(text, "hex"));
const utf8 = (bytes) => new TextDecoder().decode(bytes);

/** The vectors' "Event JSON" of a decoded frame. */
function eventJson(event) {
  const name = FRAME_NAMES[event.type];
  switch (event.type) {
    case FrameType.HELLO:
      return { event: "Hello", fields: event.fields };
    case FrameType.READY:
      return { event: "Ready", connector_id: event.connectorId, max_streams: event.maxStreams, caps: event.caps, max_frame: event.maxFrame, max_statement_bytes: event.maxStatementBytes };
    case FrameType.QUERY:
      return { event: "Query", stream_id: event.streamId, query_id: event.queryId, token: event.token, sql: event.sql, query: event.query, params: event.params, options: event.options, attestation: event.attestation, session: event.session };
    case FrameType.CANCEL:
      return { event: "Cancel", stream_id: event.streamId, reason: event.reason };
    case FrameType.COLUMNS:
    case FrameType.ROWS:
    case FrameType.DONE:
    case FrameType.ERROR:
      return { event: name[0] + name.slice(1).toLowerCase(), stream_id: event.streamId, data_text: utf8(event.data) };
    case FrameType.CREDIT:
      return { event: "Credit", stream_id: event.streamId, increment: event.increment };
    case FrameType.PING:
    case FrameType.PONG:
      return { event: name === "PING" ? "Ping" : "Pong", data_hex: hex(event.data) };
    case FrameType.DRAIN:
      return { event: "Drain", reason: event.reason };
    case FrameType.CHECKPOINT:
      return { event: "Checkpoint", fields: event.fields };
    default:
      return { event: "GoAway", code: event.code, message: event.message, last_stream: event.lastStream };
  }
}

/** Re-encode an Event JSON the way protocol/_codec.py does (canonical JSON payloads). */
function encodeEvent(e) {
  const enc = new TextEncoder();
  const frame = (type, streamId, payload) => encodeFrame(type, streamId, payload);
  switch (e.event) {
    case "Hello":
      return frame(FrameType.HELLO, 0, canonicalJson(e.fields));
    case "Ready":
      return frame(FrameType.READY, 0, canonicalJson({ connector_id: e.connector_id, max_streams: e.max_streams, caps: e.caps, max_frame: e.max_frame, max_statement_bytes: e.max_statement_bytes }));
    case "Query":
      return frame(FrameType.QUERY, e.stream_id, canonicalJson({ query_id: e.query_id, token: e.token, sql: e.sql, query: e.query, params: e.params, options: e.options, attestation: e.attestation, ...(e.session === null ? {} : { session: e.session }) }));
    case "Cancel":
      return frame(FrameType.CANCEL, e.stream_id, e.reason ? canonicalJson({ reason: e.reason }) : new Uint8Array(0));
    case "Columns":
    case "Rows":
    case "Done":
    case "Error":
      return frame(FrameType[e.event.toUpperCase()], e.stream_id, enc.encode(e.data_text));
    case "Credit":
      return frame(FrameType.CREDIT, e.stream_id, creditPayload(e.increment));
    case "Ping":
    case "Pong":
      return frame(FrameType[e.event.toUpperCase()], 0, unhex(e.data_hex));
    case "Drain":
      return frame(FrameType.DRAIN, 0, canonicalJson({ reason: e.reason }));
    case "Checkpoint":
      return frame(FrameType.CHECKPOINT, 0, canonicalJson(e.fields));
    default:
      return frame(FrameType.GOAWAY, 0, canonicalJson({ code: e.code, message: e.message, last_stream: e.last_stream }));
  }
}

const frames = load("frames.json").vectors;

test(`frames.json: ${frames.length} vectors, whole and byte by byte`, () => {
  for (const v of frames) {
    const data = unhex(v.hex);
    if (v.valid) {
      const parsed = parseFrame(data, { maxPayload: v.max_frame });
      assert.equal(parsed.type, v.frame.type_code, v.name);
      assert.equal(parsed.streamId, v.frame.stream_id, v.name);
      const event = eventJson(decodePayload(parsed));
      assert.deepEqual(event, v.decoded, v.name);
      assert.equal(hex(encodeEvent(v.decoded)), v.hex, `${v.name}: re-encoding`);
      const reader = new FrameReader({ maxPayload: v.max_frame });
      const seen = [];
      for (const byte of data) {
        reader.feed(new Uint8Array([byte]));
        const f = reader.nextFrame();
        if (f) seen.push(eventJson(decodePayload(f)));
      }
      assert.deepEqual(seen, [v.decoded], `${v.name}: byte by byte`);
    } else {
      assert.throws(
        () => decodePayload(parseFrame(data, { maxPayload: v.max_frame })),
        (err) => err instanceof ProtocolError && err.errorCode === v.error.code && err.closeCode === v.error.close_code,
        v.name,
      );
    }
  }
});

const auth = load("auth.json");

async function keyFromVector(entry) {
  const jwk = { kty: "OKP", crv: "Ed25519", d: b64url(unhex(entry.seed_hex)), x: b64url(unhex(entry.public_hex)) };
  return { ...(await loadRelayKey(JSON.stringify(jwk))), keyId: entry.key_id };
}

test("auth.json: canonical JSON", () => {
  for (const c of auth.canonical_json) assert.equal(hex(canonicalJson(c.value)), c.canonical_hex);
});

test("auth.json: connector tokens (jti replay as the Durable Object keeps it)", async () => {
  for (const v of auth.connector_tokens) {
    const keys = v.verify.connector_keys.map((name) => `ed25519:${b64url(unhex(auth.keys[name].public_hex))}`);
    const registered = { [auth.keys.connector.key_id]: keys };
    const seen = new Set();
    let outcome;
    for (let i = 0; i < v.verify.uses; i++) {
      try {
        const claims = await verifyConnectorToken(v.token, registered, { tunnel: v.verify.tunnel, now: v.verify.now });
        const key = `jti:${claims.connectorId}:${claims.jti}`;
        outcome = seen.has(key) ? { error: "auth.replay" } : { claims };
        seen.add(key);
      } catch (err) {
        outcome = { error: err.code };
      }
    }
    if (v.valid) {
      const { connectorId, tunnel, jti, nonce, iat, exp, publicKeyHex } = outcome.claims ?? {};
      assert.deepEqual({ connector_id: connectorId, tunnel, jti, nonce, iat, exp, public_key_hex: publicKeyHex }, v.claims, v.name);
    } else {
      assert.equal(outcome.error, v.error, v.name);
    }
  }
});

async function helloOutcome(v) {
  const pinned = auth.keys[v.verify.relay_key];
  const f = v.fields;
  if (f.relay_key_id !== auth.keys.relay.key_id) return "auth.relay_rejected";
  if (!(await verifySigned(unhex(pinned.public_hex), HELLO_CONTEXT, f))) return "auth.relay_rejected";
  for (const name of ["nonce", "tunnel", "connector_id"]) if (f[name] !== v.verify[name]) return "auth.relay_rejected";
  return null;
}

test("auth.json: HELLOs reproduce byte for byte and verify", async () => {
  const relayKey = await keyFromVector(auth.keys.relay);
  for (const v of auth.hellos) {
    assert.equal(await helloOutcome(v), v.valid ? null : v.error, v.name);
    if (!v.valid) continue;
    const f = v.fields;
    const signed = await signHello(relayKey, { sessionId: f.session_id, tunnel: f.tunnel, connectorId: f.connector_id, nonce: f.nonce, limits: f.limits, caps: f.caps });
    assert.deepEqual(signed, f, `${v.name}: reproduced`);
    const { sig, ...unsigned } = f;
    assert.equal(hex(new TextEncoder().encode(HELLO_CONTEXT + new TextDecoder().decode(canonicalJson(unsigned)))), v.signing_input_hex);
    assert.ok(sig);
  }
});

async function attestationOutcome(v, replay) {
  const q = v.query;
  const att = q.attestation;
  const pinned = auth.keys[v.verify.relay_key];
  if (att.relay_key_id !== auth.keys.relay.key_id) return "auth.attestation_invalid";
  if (!(await verifySigned(unhex(pinned.public_hex), QUERY_CONTEXT, att))) return "auth.attestation_invalid";
  const statement = q.sql !== null ? `sql:${q.sql}` : `query:${q.query}`;
  const expected = {
    session_id: v.verify.session_id,
    query_id: q.query_id,
    statement_sha256: await sha256Hex(statement),
    params_sha256: await sha256Hex(canonicalJson(q.params)),
    token_sha256: await sha256Hex(q.token),
    options_sha256: await sha256Hex(canonicalJson(q.options)),
  };
  if (q.session) expected.session_sha256 = await sha256Hex(canonicalJson(q.session));
  if (Object.hasOwn(att, "session_sha256") !== Object.hasOwn(expected, "session_sha256")) return "auth.attestation_invalid";
  for (const [name, value] of Object.entries(expected)) if (att[name] !== value) return "auth.attestation_invalid";
  if (Math.abs(v.verify.now * 1000 - att.ts) > 60_000) return "auth.attestation_invalid";
  if (replay.has(`nonce:${att.nonce}`)) return "auth.replay";
  if (replay.has(`query:${q.query_id}`)) return "query.duplicate";
  replay.add(`nonce:${att.nonce}`);
  replay.add(`query:${q.query_id}`);
  return null;
}

test("auth.json: attestations reproduce byte for byte and verify", async () => {
  const relayKey = await keyFromVector(auth.keys.relay);
  for (const v of auth.attestations) {
    const replay = new Set();
    let outcome;
    for (let i = 0; i < v.verify.uses; i++) outcome = await attestationOutcome(v, replay);
    assert.equal(outcome, v.valid ? null : v.error, v.name);
    if (!v.valid) continue;
    const q = v.query;
    const made = await makeAttestation(relayKey, {
      sessionId: q.attestation.session_id, queryId: q.query_id, token: q.token, sql: q.sql, query: q.query,
      params: q.params, options: q.options, now: q.attestation.ts / 1000, nonce: q.attestation.nonce,
      session: q.session ?? null,
    });
    assert.deepEqual(made, q.attestation, `${v.name}: reproduced`);
  }
});

test("auth.json: checkpoints verify under the connector's key(s) as the relay checks them", async () => {
  for (const v of auth.checkpoints) {
    const f = v.fields;
    checkCheckpoint(f);
    const keys = v.verify.connector_keys.map((name) => unhex(auth.keys[name].public_hex));
    let outcome = null;
    if (f.connector_id !== v.verify.connector_id || f.tunnel !== v.verify.tunnel) outcome = "auth.invalid_token";
    else if (!(await Promise.all(keys.map((k) => verifySigned(k, CHECKPOINT_CONTEXT, f)))).some(Boolean)) outcome = "auth.invalid_token";
    assert.equal(outcome, v.valid ? null : v.error, v.name);
    if (!v.valid) continue;
    const { sig, ...unsigned } = f;
    assert.equal(hex(new TextEncoder().encode(CHECKPOINT_CONTEXT + new TextDecoder().decode(canonicalJson(unsigned)))), v.signing_input_hex);
    assert.ok(sig);
  }
});

const sequences = load("sequences.json").vectors.filter((v) => v.role === "relay");

/** The CREDIT frames among the bytes a connection queued by itself, as Event JSON. */
function credits(bytes) {
  const reader = new FrameReader({ maxPayload: 16 * 1024 * 1024 });
  reader.feed(bytes);
  const out = [];
  for (let frame = reader.nextFrame(); frame !== null; frame = reader.nextFrame()) {
    if (frame.type === FrameType.CREDIT) out.push(eventJson(decodePayload(frame)));
  }
  return out;
}

test(`sequences.json: ${sequences.length} relay-side connections, run on the Durable Object's Connection`, () => {
  assert.ok(sequences.length >= 10);
  const lostJson = (e) => (e.type === "lost" ? { event: "ConnectionLost", clean: e.clean } : eventJson(e));
  for (const v of sequences) {
    const conn = new Connection({ limits: v.limits });
    const events = [];
    const credit = [];
    let error = null;
    for (const step of v.steps) {
      try {
        if (step.send) {
          conn.send(parseFrame(unhex(step.send), { maxPayload: 16 * 1024 * 1024 }));
          assert.equal(hex(conn.dataToSend()), step.send, `${v.name}: send reproduces the bytes`);
        } else if (step.receive) conn.receiveData(unhex(step.receive));
        else if (step.consumed) conn.consumed(...step.consumed);
        else conn.receiveEof();
        events.push(...conn.events().map(lostJson));
        credit.push(...credits(conn.dataToSend()));
      } catch (err) {
        if (!(err instanceof ProtocolError)) throw err;
        events.push(...conn.events().map(lostJson));
        error = { code: err.errorCode, close_code: err.closeCode };
        break;
      }
    }
    assert.deepEqual(events, v.events, `${v.name}: events`);
    assert.deepEqual(credit, v.credit, `${v.name}: credit`);
    assert.deepEqual(error, v.error, `${v.name}: error`);
  }
});

test("sequences.json: a connection restored from its snapshot goes on where it was", () => {
  for (const v of sequences) {
    let conn = new Connection({ limits: v.limits });
    const events = [];
    const credit = [];
    let error = null;
    for (const step of v.steps) {
      conn = Connection.restore(structuredClone(conn.snapshot())); // as after hibernation
      try {
        if (step.send) conn.send(parseFrame(unhex(step.send), { maxPayload: 16 * 1024 * 1024 }));
        else if (step.receive) conn.receiveData(unhex(step.receive));
        else if (step.consumed) conn.consumed(...step.consumed);
        else conn.receiveEof();
        events.push(...conn.events().map((e) => (e.type === "lost" ? "lost" : e.type)));
        if (!step.send) credit.push(...credits(conn.dataToSend()));
        conn.dataToSend();
      } catch (err) {
        if (!(err instanceof ProtocolError)) throw err;
        error = { code: err.errorCode, close_code: err.closeCode };
        break;
      }
    }
    // (query ids are not in a snapshot, so the lost records' text differs: compare the types)
    assert.deepEqual(events, v.events.map((e) => (e.event === "ConnectionLost" ? "lost" : FrameType[e.event.toUpperCase()] ?? e.event)), `${v.name}: events`);
    assert.deepEqual(credit, v.credit, `${v.name}: credit`);
    assert.deepEqual(error, v.error, `${v.name}: error`);
  }
});
