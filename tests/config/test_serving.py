"""How the site is served: Daphne with the timeouts of config/daphne_flags.py, behind the
nginx of deploy/nginx.conf (docker-compose's `proxy`), which bounds what Daphne cannot: a
client that never finishes its request headers. Real processes on loopback, raw sockets,
every wait bounded."""

import asyncio
import http.client
import json
import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from config import daphne_flags
from tests.realtime.servers import ROOT, Daphne, _die_with_parent, migrated_sqlite, server_env
from tests.realtime.servers import serverctl as run_serverctl

NGINX = "/usr/sbin/nginx"
CONF = ROOT / "deploy" / "nginx.conf"
MARGIN = 5  # seconds of slack on a shared machine, on top of a configured bound


def header_timeout() -> int:
    """deploy/nginx.conf's client_header_timeout, in seconds."""
    return int(re.search(r"client_header_timeout (\d+)s;", CONF.read_text()).group(1))


def _replaced(text: str, old: str, new: str) -> str:
    assert old in text, f"deploy/nginx.conf no longer has {old!r}"
    return text.replace(old, new)


class Nginx:
    """deploy/nginx.conf as it is, pointed at a local Daphne and listening on loopback."""

    def __init__(self, upstream_port: int, directory: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        text = CONF.read_text()
        text = _replaced(text, "server web:8000;", f"server 127.0.0.1:{upstream_port};")
        text = _replaced(text, "listen 8080;", f"listen 127.0.0.1:{self.port};")
        text = _replaced(text, "worker_processes auto;", "worker_processes 1;")
        temp = "".join(
            f"    {kind}_temp_path {directory}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        text = _replaced(text, "http {\n", "http {\n" + temp)
        conf = directory / "nginx.conf"
        conf.write_text(text)
        self.log = directory / "nginx-error.log"
        command = [NGINX, "-p", f"{directory}/", "-c", str(conf), "-e", str(self.log)]
        self.process = subprocess.Popen(
            [
                "timeout",
                "-k",
                "5",
                "300",
                *command,
                "-g",
                f"daemon off; pid {directory}/nginx.pid;",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.log.read_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("nginx did not start listening")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@pytest.fixture(scope="module")
def daphne(tmp_path_factory):
    """Daphne started as `make run` / `make serve` start it: with config.daphne_flags."""
    directory = tmp_path_factory.mktemp("serving")
    server = Daphne(
        server_env(migrated_sqlite(directory)),
        directory / "daphne.log",
        args=("--proxy-headers", *daphne_flags.flags()),
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(daphne, tmp_path_factory):
    if not Path(NGINX).exists():
        pytest.fail(f"{NGINX} is missing; `make test` installs Debian's nginx-light package")
    server = Nginx(daphne.port, tmp_path_factory.mktemp("nginx"))
    yield server
    server.stop()


def half_request(port: int) -> socket.socket:
    """A connection that has sent a request line and part of a header, and no end."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    return sock


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Read (and drop) whatever arrives until the peer closes: True if it did in time."""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def trickle(sockets: list[socket.socket], seconds: float) -> list[bool]:
    """Send each connection one more header byte a second for `seconds`; per connection,
    whether the server closed it meanwhile."""
    closed = [False] * len(sockets)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not all(closed):
        for index, sock in enumerate(sockets):
            if closed[index]:
                continue
            try:
                sock.sendall(b"a")
                readable, _, _ = select.select([sock], [], [], 0)
                if readable and not sock.recv(65536):
                    closed[index] = True
            except (BrokenPipeError, ConnectionResetError):
                closed[index] = True
        time.sleep(1)
    return closed


def test_the_proxy_closes_a_connection_whose_request_headers_never_end(proxy):
    """Half a request, then silence: nginx drops it within client_header_timeout."""
    bound = header_timeout()
    assert bound <= 30

    with half_request(proxy.port) as sock:
        assert closed_within(sock, bound + MARGIN)


def test_a_header_trickled_byte_by_byte_is_bounded_by_the_proxy_and_not_by_daphne(proxy, daphne):
    """Slowloris: a byte a second keeps the header unfinished. nginx ends it within its
    client_header_timeout; Daphne alone keeps it open (its only timeout is an idle one that
    every byte restarts), which is why the deployment sits behind the proxy."""
    bound = header_timeout()
    through_proxy, straight_to_daphne = half_request(proxy.port), half_request(daphne.port)

    closed = trickle([through_proxy, straight_to_daphne], bound + MARGIN)

    assert closed == [True, False]
    through_proxy.close()
    straight_to_daphne.close()


@pytest.mark.asyncio
async def test_through_the_proxy_pages_and_websockets_work_and_the_origin_rule_holds(proxy, daphne):
    """The proxy passes requests and WebSocket upgrades with the browser's Host, so the
    site's own origin is the proxy's (`http://127.0.0.1:<proxy port>`); Daphne's own port is
    another origin and refused."""
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    connection.request("GET", "/healthz")
    assert connection.getresponse().status == 200
    key = run_serverctl(daphne.env, "setup")["homeowner"]["key"]
    url = f"ws://127.0.0.1:{proxy.port}/ws/?token={key}"

    own = {"Origin": f"http://127.0.0.1:{proxy.port}"}
    async with connect(url, additional_headers=own, open_timeout=10) as websocket:
        await websocket.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(websocket.recv(), 10)) == {"type": "pong"}
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, additional_headers={"Origin": f"http://127.0.0.1:{daphne.port}"}):
            pass
    assert refused.value.response.status_code == 403


def test_daphne_drops_a_websocket_that_stops_answering_pings(tmp_path):
    """--ping-interval/--ping-timeout come from config.daphne_flags (here shortened through
    the environment, as a deployment may): a client that never answers a ping is dropped
    after about interval + timeout seconds, not kept until the 24 h WebSocket limit."""
    environ = {"DAPHNE_PING_INTERVAL": "1", "DAPHNE_PING_TIMEOUT": "1"}
    env = server_env(migrated_sqlite(tmp_path))
    server = Daphne(env, tmp_path / "daphne.log", args=tuple(daphne_flags.flags(environ)))
    server.start()
    try:
        key = run_serverctl(env, "setup")["homeowner"]["key"]
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(
            f"GET /ws/?token={key} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 101")

        assert closed_within(sock, 1 + 1 + 2 + 2 * MARGIN)  # Daphne checks every 2 s
        sock.close()
    finally:
        server.stop()


class _Spawned(Exception):
    pass


def test_make_run_and_make_serve_start_daphne_with_the_same_flags(monkeypatch):
    """One place for the values: the Makefile's `run` and `serve` both start config/serve.py,
    which puts config.daphne_flags on every Daphne it starts (docker-compose too)."""
    from config import serve

    makefile = (ROOT / "Makefile").read_text()
    run_recipe = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    serve_recipe = makefile.split("\nserve:", 1)[1].split("\n\n", 1)[0]
    assert "-m config.serve" in run_recipe and "-m config.serve" in serve_recipe
    printed = subprocess.run(
        [sys.executable, "-m", "config.daphne_flags"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert printed == daphne_flags.flags()
    assert "--http-timeout" in printed and "--ping-timeout" in printed

    commands = []

    def popen(command, **kwargs):
        commands.append(command)
        raise _Spawned

    monkeypatch.setattr(serve.subprocess, "Popen", popen)
    monkeypatch.setattr(sys, "argv", ["serve", "--port", "0", "--workers", "1"])
    with pytest.raises(_Spawned):
        serve.main()
    assert commands[0][1 : 1 + len(printed)] == printed
