"""Real server processes for tests: Daphne on a port the kernel picks, a temporary SQLite
database prepared once, and `serverctl` commands run against the same database and Redis.

Every process is wrapped in `timeout` and dies with the test process (PR_SET_PDEATHSIG), so
nothing outlives the run even if a test is killed."""

import ctypes
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
DAPHNE = str(Path(PYTHON).parent / "daphne")
MAX_SECONDS = 300


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def server_env(sqlite_path: str, *, redis_url: str = "", **extra) -> dict:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "PYTEST_XDIST_WORKER"}
    }
    env.update(
        SQLITE_PATH=sqlite_path,
        DJANGO_SETTINGS_MODULE="config.settings",
        CELERY_TASK_ALWAYS_EAGER="true",
        ALLOWED_HOSTS="localhost,127.0.0.1",
        DEBUG="false",
        SECURE_COOKIES="false",
        LOG_LEVEL="WARNING",
        PAYMENTS_RETRY_TIMERS="false",
        SANDBOX_WEBHOOK_DELIVERY="off",
        **extra,
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def migrated_sqlite(directory: Path) -> str:
    """A migrated SQLite file; the first call per directory migrates, later ones copy."""
    template = directory / "template.sqlite3"
    if not template.exists():
        subprocess.run(
            [PYTHON, "manage.py", "migrate", "--noinput"],
            cwd=ROOT,
            env=server_env(str(template)),
            check=True,
            capture_output=True,
            timeout=240,
        )
    path = directory / f"db-{time.monotonic_ns()}.sqlite3"
    shutil.copy(template, path)
    return str(path)


def serverctl(env: dict, command: str, **arguments):
    """Run a tests/realtime/serverctl.py command in a fresh process; returns its JSON answer."""
    result = subprocess.run(
        [PYTHON, "-m", "tests.realtime.serverctl", command, json.dumps(arguments)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"serverctl {command} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


class Daphne:
    """One Daphne process serving config.asgi on 127.0.0.1:<random port> (`args`: more
    command-line flags)."""

    def __init__(self, env: dict, log_path: Path, args: tuple[str, ...] = ()) -> None:
        self.env = env
        self.args = list(args)
        self.log_path = log_path
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1024)
        self.port = self.listener.getsockname()[1]
        self.process: subprocess.Popen | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/"

    def start(self) -> "Daphne":
        fd = self.listener.fileno()
        self.log = open(self.log_path, "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                "timeout",
                "-k",
                "5",
                str(MAX_SECONDS),
                DAPHNE,
                *self.args,
                "--fd",
                str(fd),
                "config.asgi:application",
            ],
            cwd=ROOT,
            env=self.env,
            pass_fds=(fd,),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daphne exited: {self.log_path.read_text()[-3000:]}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", "/healthz")
                if connection.getresponse().status < 500:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("daphne did not become ready")

    def http(self, method: str, path: str, *, key: str, body: dict | None = None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Idempotency-Key": f"k-{time.monotonic_ns()}",
        }
        connection.request(method, path, body=json.dumps(body or {}), headers=headers)
        response = connection.getresponse()
        return response.status, response.read()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.listener.close()
        if getattr(self, "log", None):
            self.log.close()
