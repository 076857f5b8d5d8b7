"""WebSocket authentication (`?token=<api key>` or the portal session cookie), the groups that
close a connection when what authenticated it ends, the Origin rule, and a probe of how much
the server still has to write to the client."""

import functools
from urllib.parse import parse_qs, urlsplit

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain


@database_sync_to_async
def _api_key_for_token(token: str):
    from accounts.authentication import api_key_for_raw_key

    return api_key_for_raw_key(token)


class _TokenAuthMiddleware:
    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        query = parse_qs(scope.get("query_string", b"").decode())
        token = (query.get("token") or [""])[0]
        scope = dict(scope)
        if token:
            api_key = await _api_key_for_token(token)
            scope["user"] = api_key.user if api_key else AnonymousUser()
            scope["api_key_id"] = api_key.pk if api_key else None
            scope["auth_method"] = "token"
        else:
            scope["auth_method"] = "session"
        return await self.inner(scope, receive, send)


def auth_groups(scope) -> list[str]:
    """The channel-layer groups a connection joins so that ending its credential closes it
    (accounts.connections sends to them): its user's, and its session's or its API key's."""
    from accounts import connections

    groups = [connections.user_group(scope["user"].pk)]
    if scope.get("api_key_id"):
        groups.append(connections.api_key_group(scope["api_key_id"]))
    elif scope.get("auth_method") == "session" and scope["session"].session_key:
        groups.append(connections.session_group(scope["session"].session_key))
    return groups


async def credential_is_current(scope) -> bool:
    """Whether what authenticated this connection still would: the API key is neither revoked
    nor its user deactivated; the session still exists, for this user, with the password it
    was signed in with, and the user is active (Django's own session check, on a fresh read
    of the session). The periodic re-check behind the close messages, which may be lost."""
    if scope.get("api_key_id"):
        from realtime import selectors

        return await database_sync_to_async(selectors.api_key_is_active)(
            api_key_id=scope["api_key_id"]
        )
    from importlib import import_module

    from channels.auth import get_user

    session_key = scope["session"].session_key
    if not session_key:
        return False
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = await get_user({"session": store})
    return user.is_authenticated and user.pk == scope["user"].pk


def header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin1")
    return None


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(value: str) -> tuple[str, str, int] | None:
    """`scheme://host[:port]` as (scheme, host, port) with the default port filled in, or None
    for anything that is not an http(s) origin (`null`, a bare host, garbage)."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def _own_origin(scope) -> tuple[str, str, int] | None:
    """The origin this connection was made to, as Django's CSRF check derives it for a
    request: the Host header (valid for ALLOWED_HOSTS) and the scheme, https when the proxy
    says so in SECURE_PROXY_SSL_HEADER or the connection itself is wss."""
    host = header(scope, b"host")
    if not host:
        return None
    domain, _ = split_domain_port(host)
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    if not domain or not validate_host(domain, allowed):
        return None
    secure = scope.get("scheme") in ("wss", "https")
    if settings.SECURE_PROXY_SSL_HEADER:
        name, value = settings.SECURE_PROXY_SSL_HEADER
        forwarded = header(scope, name.removeprefix("HTTP_").lower().replace("_", "-").encode())
        if forwarded is not None:
            secure = forwarded.split(",", 1)[0].strip() == value
    return _origin(f"{'https' if secure else 'http'}://{host}")


def _is_trusted(origin: str, parsed: tuple[str, str, int]) -> bool:
    """TRUSTED_ORIGINS with CSRF_TRUSTED_ORIGINS' semantics: an exact origin, or
    `scheme://*.domain` for the domain's subdomains (the port then as written)."""
    for entry in settings.TRUSTED_ORIGINS:
        scheme, _, netloc = entry.partition("://")
        if netloc.startswith("*"):
            origin_netloc = urlsplit(origin.strip()).netloc
            if scheme.lower() == parsed[0] and is_same_domain(origin_netloc, netloc[1:]):
                return True
        elif _origin(entry) == parsed:
            return True
    return False


def origin_is_allowed(scope) -> bool:
    """The contract's Origin rule: an Origin header must be one of the site's own origins,
    compared by scheme, host and port: the origin the connection was made to (its Host, as
    Django's CSRF check takes it) or one in TRUSTED_ORIGINS (SITE_URL's origin and the
    TRUSTED_ORIGINS setting; the same list is CSRF_TRUSTED_ORIGINS). Session-authenticated
    connections must send one (browsers always do, and the cookie alone is what a page on
    another origin would ride on); token clients may omit it."""
    origin = header(scope, b"origin")
    if origin is None:
        return scope.get("auth_method") == "token"
    parsed = _origin(origin)
    if parsed is None:
        return False
    return parsed == _own_origin(scope) or _is_trusted(origin, parsed)


class _TransportProbe:
    """ASGI has no backpressure for `websocket.send`: Daphne writes into the Twisted transport,
    which buffers without limit for a client that does not read. When the server is Daphne we
    can see that buffer, so each connection's sender waits while it is over a limit and its
    own bounded queue fills instead (see realtime.consumers). Under other servers (or the test
    communicator) there is no probe and the queue alone bounds what waits in this process."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        probe = _buffered_bytes_probe(send)
        if probe is not None:
            scope = dict(scope)
            scope["realtime.buffered_bytes"] = probe
        return await self.inner(scope, receive, send)


def _buffered_bytes_probe(send):
    if not isinstance(send, functools.partial) or not send.args:
        return None
    protocol = send.args[-1]
    if not hasattr(getattr(protocol, "transport", None), "dataBuffer"):
        return None

    def buffered_bytes() -> int:
        transport = protocol.transport
        if transport is None:
            return 0
        pending = len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
        return pending + getattr(transport, "_tempDataLen", 0)

    return buffered_bytes


def WebSocketAuthMiddleware(inner):
    """Session auth first (cookie), then a token, when present, takes precedence."""
    return _TransportProbe(AuthMiddlewareStack(_TokenAuthMiddleware(inner)))
