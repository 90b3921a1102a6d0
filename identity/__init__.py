"""Who is asking: end users' OIDC/JWT tokens and the Ed25519 keys of connectors and relays.

A leaf below the connector, the relay and the CLI (it imports only protocol/):

- `identity.oidc`: `TokenVerifier` checks an end user's bearer token against configured issuers
  (the relay does it for every request, the connector again for every query) and yields an
  `Identity`; the strict shape rules of the token live in `identity._idtoken`.
- `identity.keys`: Ed25519 key files and ``ed25519:`` key strings (`edgetds keygen`).

Import the submodule you need: importing `identity` itself loads nothing else.
"""
