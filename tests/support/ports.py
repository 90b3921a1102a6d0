"""Loopback ports a test names before anything listens on them, held so nothing else takes them.

A port picked by binding port 0 and closing the socket again is free only until another process
on the machine (a second test suite, a client's ephemeral port) takes it; a server started on it
later then fails with "Address already in use", and a "closed" port may answer. Where the
process can bind port 0 itself and say which port it got, tests do that. Where the port must be
known first (a config file names it, or a server comes back on the same port after a restart),
`reserved_port()` keeps a socket bound to it, not listening, until the test process exits:

- the kernel never hands a bound port out again, neither to bind(0) nor to an outgoing
  connection's ephemeral port, and a bind without SO_REUSEADDR to it fails;
- a server that sets SO_REUSEADDR may still bind and listen on it, since the reservation does
  not listen: trio's open_tcp_listeners (tdslite, the ops server), asgiapp.server (the relay),
  hypercorn (the dev IdP) and krb5kdc all set it, and every restart binds again the same way;
- while no server listens there, a connection to it is refused (a relay or database that is down).

    port = reserved_port()
    config.write_text(f'listen = "127.0.0.1:{port}"')   # the process binds it (SO_REUSEADDR)
"""

from __future__ import annotations

import socket

__all__ = ["closed_port", "reserved_port"]

#: The reservations of this test process (one socket each; closed when the process exits).
_HELD: list[socket.socket] = []


def reserved_port() -> int:
    """A loopback TCP port that stays bound here (not listening) until the test process exits."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    _HELD.append(sock)
    return int(sock.getsockname()[1])


def closed_port() -> int:
    """A loopback port nothing listens on (a relay, IdP or database that is down), held so that
    nothing starts listening there during the test."""
    return reserved_port()
