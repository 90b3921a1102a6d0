// @ts-check
/**
 * The query answer's body on its way from the Durable Object to the client (SPEC.md 11.1).
 *
 * guardStream passes the object's NDJSON body through and, if the object dies mid-stream (reset,
 * deploy, eviction), ends it with the terminal transport.lost record so the client never sees a
 * silently short result. The object's chunks are not line-aligned, so only whole lines are
 * forwarded: the bytes after the last "\n" are held back until their line is complete, and on a
 * break the held partial line is dropped, so the terminal record is always a line of its own.
 * Bytes are not parsed; a client that hangs up cancels the object's stream (-> CANCEL frame).
 */

import { concatBytes, ErrorCode } from "./frames.js";
import { errorRecord } from "./http.js";

const NEWLINE = 0x0a;

/**
 * @param {Response} response the Durable Object's answer
 * @param {string} queryId named in the transport.lost record
 * @param {{waitUntil?: (p: Promise<unknown>) => void}} [ctx] keeps the pump alive
 * @returns {Response}
 */
export function guardStream(response, queryId, ctx) {
  if (response.status !== 200 || response.body === null) return response;
  const { readable, writable } = new TransformStream();
  const reader = response.body.getReader();
  const writer = writable.getWriter();
  let held = new Uint8Array(0); // the trailing partial line, not forwarded yet
  const pump = (async () => {
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (err) {
        console.error(`tunnel DO stream broke: ${err?.message ?? err}`);
        await writer.write(errorRecord(ErrorCode.TRANSPORT_LOST, "the relay lost the tunnel mid-stream; the result is incomplete", { queryId })).catch(() => {});
        await writer.close().catch(() => {});
        return;
      }
      if (chunk.done) {
        // The object ended its body itself: whatever it sent last goes out as it is.
        if (held.length > 0) await writer.write(held).catch(() => {});
        await writer.close().catch(() => {});
        return;
      }
      const bytes = held.length === 0 ? chunk.value : concatBytes([held, chunk.value]);
      const end = bytes.lastIndexOf(NEWLINE) + 1;
      held = bytes.slice(end);
      if (end === 0) continue;
      try {
        await writer.write(bytes.subarray(0, end));
      } catch {
        await reader.cancel("client went away").catch(() => {});
        return;
      }
    }
  })();
  ctx?.waitUntil?.(pump);
  return new Response(readable, { status: 200, headers: response.headers });
}
