"""Config keys of the operations side, parsed for connector/config.py: [connector] proxy and
[ops] listen (kept here so the main schema module stays about the tunnel, database and policy).

``r`` is connector/config.py's problem-collecting reader (``get``, ``secret``, ``table``,
``unknown``, ``problem``): every mistake is recorded with its location, never raised.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

__all__ = ["parse_ops_listen", "parse_proxy"]


def parse_proxy(r: Any, t: Mapping[str, Any], env: Mapping[str, str]) -> str | None:
    """[connector] proxy: absent = environment, "direct" = none, else an http(s):// proxy URL;
    Basic credentials from proxy_user + proxy_password_file/_env (never in the URL)."""
    w = "connector"
    value = r.get(t, "proxy", w, str)
    if value is None:
        if "proxy_user" in t:
            r.problem(f"{w}.proxy_user", "set proxy = URL too (or remove proxy_user)")
        return None
    if value == "direct":
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        r.problem(
            f"{w}.proxy",
            f"{value!r} must be an http:// or https:// proxy URL "
            '(e.g. "http://proxy.corp:3128"), or "direct"',
        )
        return None
    if parts.username or parts.password:
        r.problem(
            f"{w}.proxy",
            "no credentials in the URL: use proxy_user and proxy_password_file/proxy_password_env",
        )
        return None
    user = r.get(t, "proxy_user", w, str, "")
    if not user:
        return str(value)
    secret = r.secret(t, w, "proxy_password_file", "proxy_password_env", env, what="proxy password")
    if secret is None:
        return None
    password = secret.decode("utf-8", "replace").rstrip("\r\n")
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.netloc}"
    return f"{parts.scheme}://{netloc}"


def parse_ops_listen(r: Any, doc: Mapping[str, Any]) -> str:
    """[ops] listen = "127.0.0.1:9464": where /metrics, /healthz and /ready are served."""
    t = r.table(doc, "ops", "", required=False)
    r.unknown(t, {"listen"}, "ops")
    listen = r.get(t, "listen", "ops", str, "")
    if listen:
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            r.problem("ops.listen", f'{listen!r} must be host:port, e.g. "127.0.0.1:9464"')
            return ""
    return str(listen)
