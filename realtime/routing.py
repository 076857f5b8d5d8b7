from django.urls import path

from realtime.consumers import EventsConsumer

websocket_urlpatterns: list = [
    path("ws/", EventsConsumer.as_asgi()),
]
