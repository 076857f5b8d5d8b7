"""HTTP and WebSocket under one ASGI application (served by Daphne)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from payments import ingest  # noqa: E402
from realtime.auth import WebSocketAuthMiddleware  # noqa: E402
from realtime.routing import websocket_urlpatterns  # noqa: E402


async def http_app(scope, receive, send):
    """Gateway webhooks take the lean path of payments.ingest (same answers as the Django
    views, without Django's request cycle); everything else is Django."""
    if scope["path"] in ingest.PATHS:
        return await ingest.asgi_app(scope, receive, send)
    return await django_asgi_app(scope, receive, send)


application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": WebSocketAuthMiddleware(URLRouter(websocket_urlpatterns)),
    }
)

from realtime.gc_tuning import gc_tune_for_connections  # noqa: E402

gc_tune_for_connections()
