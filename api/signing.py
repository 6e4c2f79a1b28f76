"""URLs songlake hands out to itself: signed and expiring, built as the client sees the server.

A signed URL carries ``X-Amz-Date`` / ``X-Amz-Expires`` (score-client reads them to resume,
Score issue #394) and ``X-Songlake-Signature``, an HMAC-SHA256 under a key kept in
``<root>/state/download-url.key`` (mode 0600) over what the URL grants: a download names the
object, its analysis state and its access, so a URL stops working the moment the analysis is
unpublished or suppressed or the file's access changes; an upload part names its PUT.

Behind a proxy, URLs use the proxy's ``X-Forwarded-Proto``, ``-Host`` and ``-Prefix`` when the
request comes from an address in the ``trusted_proxies`` setting (addresses or CIDR networks),
and ignore them from anyone else.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

from flask import request

from . import auth
from .params import current_catalog, current_settings

KEY_FILE = "download-url.key"
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_HOST_RE = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
_PREFIX_RE = re.compile(r"^(/[A-Za-z0-9._~\-]+)*/?$")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def _networks(text: str) -> tuple[Network, ...]:
    return tuple(
        ipaddress.ip_network(item.strip(), strict=False) for item in text.split(",") if item.strip()
    )


def _from_trusted_proxy() -> bool:
    nets = _networks(current_settings().trusted_proxies)
    if not nets or not request.remote_addr:
        return False
    try:
        addr = ipaddress.ip_address(request.remote_addr)
    except ValueError:
        return False
    return any(addr in net for net in nets)


def _forwarded(name: str) -> str | None:
    value = request.headers.get(name)
    return value.split(",")[0].strip() if value else None


def base_url() -> str:
    """The server's root URL as the client reached it, ending in '/'."""
    scheme, host, prefix = request.scheme, request.host, request.script_root
    if _from_trusted_proxy():
        proto = _forwarded("X-Forwarded-Proto")
        if proto and proto.lower() in ("http", "https"):
            scheme = proto.lower()
        fwd_host = _forwarded("X-Forwarded-Host")
        if fwd_host and _HOST_RE.match(fwd_host):
            host = fwd_host
        fwd_prefix = _forwarded("X-Forwarded-Prefix")
        if fwd_prefix is not None and _PREFIX_RE.match(fwd_prefix):
            prefix = fwd_prefix
    return f"{scheme}://{host}{prefix.rstrip('/')}/"


def _key() -> bytes:
    path: Path = current_catalog().settings.state_dir / KEY_FILE
    return auth.secret_key(path)


def _signature(grant: str, date: str, expires: str) -> str:
    return hmac.new(_key(), f"{grant}\n{date}\n{expires}".encode(), hashlib.sha256).hexdigest()


def signed_query(grant: str, expires: int) -> str:
    """The query string that makes a URL grant ``grant`` for ``expires`` seconds."""
    date = datetime.now(UTC).strftime(_AMZ_DATE)
    sig = _signature(grant, date, str(expires))
    return f"X-Amz-Date={date}&X-Amz-Expires={expires}&X-Songlake-Signature={sig}"


def check_signed(grant: str, why: str = "") -> None:
    """The request's URL was signed for ``grant`` and has not expired; else 403."""
    date = request.args.get("X-Amz-Date", "")
    expires = request.args.get("X-Amz-Expires", "")
    sig = request.args.get("X-Songlake-Signature", "")
    try:
        issued = datetime.strptime(date, _AMZ_DATE).replace(tzinfo=UTC)
        valid = datetime.now(UTC) <= issued + timedelta(seconds=int(expires))
    except ValueError:
        valid = False
    if not (valid and hmac.compare_digest(sig, _signature(grant, date, expires))):
        raise auth.ForbiddenToken(f"The URL is not valid or has expired{why}")
