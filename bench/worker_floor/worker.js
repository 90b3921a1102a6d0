// The workerd floor of a relay query (bench/worker_floor.py): what any Worker that answers a POST
// through a Durable Object pays, with none of the relay's work.
//   POST /plain  read the body, answer one fixed NDJSON line
//   POST /rpc    read the body, JSON.parse it, one Durable Object RPC call with a string, answer
import { DurableObject } from "cloudflare:workers";

export class Floor extends DurableObject {
  async echo(text) {
    return text;
  }
}

const HEADERS = { "content-type": "application/x-ndjson" };

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/plain") {
      const body = await request.text();
      return new Response(`{"done":${body.length}}\n`, { headers: HEADERS });
    }
    const body = await request.json();
    const stub = env.FLOOR.get(env.FLOOR.idFromName("floor"));
    const out = await stub.echo(JSON.stringify(body));
    return new Response(`${out}\n`, { headers: HEADERS });
  },
};
