"""What every ASGI app of ours shares (the relay's HTTP API, the connector's ops endpoint, the dev
IdP): a leaf package that imports nothing of ours.

- `answer_lifespan`: answer the server's lifespan messages when the app has nothing to start or
  stop (hypercorn sends them to every app and logs a warning for an app that refuses them).
- `read_body`: a request's whole body (for apps whose clients are our own).
- `asgiapp.server` (imported by name, not from here: the connector does not load it): the relay's
  HTTP/1.1 + WebSocket server: llhttp (httptools, `asgiapp.http1`) reads its requests, wsproto
  its WebSockets.
"""

from __future__ import annotations

from asgiapp.body import read_body
from asgiapp.lifespan import answer_lifespan

__all__ = ["answer_lifespan", "read_body"]
