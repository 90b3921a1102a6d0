// A relay stand-in for the client's unit tests: a fetcher answering each request by its path
// under /v1/tunnels/demo/ and recording what it received. The relays themselves run end to end
// under workerd and in Python (tests/worker, tests/relay, tests/kysely).

/** NDJSON text of `records`, one per line. */
export function ndjson(records) {
  return records.map((r) => JSON.stringify(r) + "\n").join("");
}

/**
 * @param {Record<string, (body: any) => [number, any]>} routes `"<path>": (body) => [status, body]`
 *   (a string body is sent as it is, anything else as JSON); an unknown path is a 404
 * @returns {{fetcher: {fetch: (request: Request) => Promise<Response>}, requests: {path: string, body: any, token: string|null, accept: string|null}[]}}
 */
export function relayAnswering(routes) {
  const requests = [];
  const fetcher = {
    async fetch(request) {
      const path = new URL(request.url).pathname.replace("/v1/tunnels/demo/", "");
      const body = await request.json();
      requests.push({ path, body, token: request.headers.get("authorization"), accept: request.headers.get("accept") });
      const route = routes[path];
      if (!route) return new Response(JSON.stringify({ error: { code: "request.invalid", message: `no route ${path}` } }), { status: 404 });
      const [status, answer] = route(body);
      return new Response(typeof answer === "string" ? answer : JSON.stringify(answer), { status });
    },
  };
  return { fetcher, requests };
}
