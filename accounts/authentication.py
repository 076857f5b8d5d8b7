"""Bearer API keys, for DRF and (through `user_for_raw_key`) for the WebSocket `?token=`."""

from rest_framework import authentication, exceptions

from accounts.models import ApiKey
from accounts.services import api_key_touch

_CACHE_ATTR = "_bearer_api_key"


def api_key_for_raw_key(raw_key: str) -> ApiKey | None:
    if not raw_key or len(raw_key) > 200:
        return None
    api_key = (
        ApiKey.objects.select_related("user")
        .filter(key_hash=ApiKey.hash(raw_key), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if api_key is not None:
        api_key_touch(api_key=api_key)
    return api_key


def _api_key_for_header(request, header: str) -> ApiKey | None:
    """Resolve once per request; the idempotency middleware and DRF share the answer."""
    if hasattr(request, _CACHE_ATTR):
        return getattr(request, _CACHE_ATTR)
    scheme, _, raw_key = header.partition(" ")
    api_key = api_key_for_raw_key(raw_key.strip()) if scheme.lower() == "bearer" else None
    setattr(request, _CACHE_ATTR, api_key)
    return api_key


def user_for_authorization_header(request, header: str):
    api_key = _api_key_for_header(request, header)
    return api_key.user if api_key else None


class BearerApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = request.headers.get("Authorization", "")
        if not header:
            return None
        if not header.lower().startswith("bearer "):
            return None
        api_key = _api_key_for_header(request._request, header)
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid, revoked or missing API key.")
        return (api_key.user, api_key)

    def authenticate_header(self, request):
        return 'Bearer realm="api"'
