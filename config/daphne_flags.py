"""Daphne's timeouts, in one place: `make run` and `make serve` (config/serve.py) both start
Daphne with these flags (`python -m config.daphne_flags` prints them for the Makefile).
Each value can be overridden by the environment variable of the same name.

What Daphne cannot bound: a client that never finishes its request headers. Twisted's HTTP
channel only has an idle timeout (60 s, not configurable through Daphne), restarted by every
byte received, so a client trickling a byte now and then holds a connection open for ever
("slowloris"). The deployment therefore sits behind a proxy that bounds the whole header
read: nginx with `client_header_timeout` (deploy/nginx.conf, the `proxy` service of
docker-compose.yml; tests/config/test_serving.py proves it)."""

import os

DEFAULTS = {
    # Seconds the application has to answer an HTTP request (then 503, or the response is
    # cut if it had started). The slowest request, a funding with an inline gateway call in
    # the embedded default, stays well below it.
    "DAPHNE_HTTP_TIMEOUT": 60,
    # Seconds from the WebSocket upgrade to the consumer accepting or refusing it.
    "DAPHNE_WEBSOCKET_CONNECT_TIMEOUT": 10,
    # A WebSocket lives at most this long (clients reconnect and resume with last_event_id).
    "DAPHNE_WEBSOCKET_TIMEOUT": 86400,
    # A WebSocket idle this long gets a protocol ping; no pong within the timeout closes it.
    "DAPHNE_PING_INTERVAL": 20,
    "DAPHNE_PING_TIMEOUT": 30,
    # Seconds the application has to finish after its client disconnected.
    "DAPHNE_APPLICATION_CLOSE_TIMEOUT": 10,
}

_FLAGS = {
    "DAPHNE_HTTP_TIMEOUT": "--http-timeout",
    "DAPHNE_WEBSOCKET_CONNECT_TIMEOUT": "--websocket_connect_timeout",
    "DAPHNE_WEBSOCKET_TIMEOUT": "--websocket_timeout",
    "DAPHNE_PING_INTERVAL": "--ping-interval",
    "DAPHNE_PING_TIMEOUT": "--ping-timeout",
    "DAPHNE_APPLICATION_CLOSE_TIMEOUT": "--application-close-timeout",
}


def values(environ=os.environ) -> dict[str, int]:
    return {name: int(environ.get(name, default)) for name, default in DEFAULTS.items()}


def flags(environ=os.environ) -> list[str]:
    """Daphne's command-line flags for these values."""
    result = []
    for name, value in values(environ).items():
        result += [_FLAGS[name], str(value)]
    return result


if __name__ == "__main__":
    print(" ".join(flags()))
