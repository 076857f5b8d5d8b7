"""WebSocket authentication: `?token=<api key>` or the portal session cookie."""

from urllib.parse import parse_qs

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser


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
        if token:
            api_key = await _api_key_for_token(token)
            scope = dict(scope)
            scope["user"] = api_key.user if api_key else AnonymousUser()
            scope["api_key_id"] = api_key.pk if api_key else None
            scope["auth_method"] = "token"
        return await self.inner(scope, receive, send)


def WebSocketAuthMiddleware(inner):
    """Session auth first (cookie), then a token, when present, takes precedence."""
    return AuthMiddlewareStack(_TokenAuthMiddleware(inner))
