// The Kysely suites' connection to the stack tests/kysely/test_kysely.py started (a relay, a real
// connector, tdslite): the relay's URL, the tunnel and end-user tokens arrive in the environment.
import { Kysely } from "kysely";

import { TunnelClient } from "../../relay/worker/src/client.js";
import { EdgetdsDialect } from "../../relay/worker/src/kysely.js";

const { EDGETDS_URL, EDGETDS_TUNNEL, EDGETDS_WRITER_TOKEN, EDGETDS_READER_TOKEN } = process.env;
if (!EDGETDS_URL || !EDGETDS_TUNNEL || !EDGETDS_WRITER_TOKEN || !EDGETDS_READER_TOKEN) {
  throw new Error("run through tests/kysely/test_kysely.py: EDGETDS_URL, EDGETDS_TUNNEL and the tokens are unset");
}

export const tunnel = new TunnelClient({ tunnel: EDGETDS_TUNNEL, url: EDGETDS_URL });

/** A Kysely for a user of the admin role (read-write login) or the analyst role (read-only). */
export function database({ reader = false, ...options } = {}) {
  const token = reader ? EDGETDS_READER_TOKEN : EDGETDS_WRITER_TOKEN;
  return new Kysely({ dialect: new EdgetdsDialect({ tunnel, token, ...options }) });
}

/** The writer's token, for direct TunnelClient calls. */
export const writerToken = EDGETDS_WRITER_TOKEN;
