"""`make run` / `make serve` say "Ready: <url>" once the site answers HTTP, not before (the
launcher binds the socket itself, so a bare connection would succeed before Daphne runs)."""

import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from config import serve


class _Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_ready_is_printed_once_the_site_answers(capsys):
    server = HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert serve.announce_when_ready("127.0.0.1", server.server_port, timeout=10)
    finally:
        server.shutdown()

    assert capsys.readouterr().out == f"Ready: http://127.0.0.1:{server.server_port}/\n"


def test_a_bound_socket_nobody_serves_is_not_ready(capsys):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # connections queue in the kernel; no HTTP answer ever comes
        port = listener.getsockname()[1]

        assert not serve.announce_when_ready("127.0.0.1", port, timeout=1)

    assert "Ready" not in capsys.readouterr().out
