"""`make run` and `make serve`: Daphne processes sharing one listening socket and, without
Redis, the Celery worker and beat of the embedded default.

The socket is bound here and handed to each Daphne child with `--fd`, so the kernel spreads
connections across them. With no REDIS_URL (and no other CELERY_BROKER_URL) there is no
`make worker` to run the tasks and the beat schedule (auto-release after the review window,
reminders, reconciliation, retries), so this also starts `celery worker --beat` on kombu's
filesystem transport in RUN_DIR (config/broker.py) and gives every child
CELERY_BROKER_URL=filesystem://localhost/, so the web processes hand their tasks to that worker.

Daphne takes the client address (REMOTE_ADDR: the login lockout's key, the logs) from
X-Forwarded-For only with PROXY_HEADERS=true: set it only behind a proxy that replaces that
header with the address it saw (nginx: `proxy_set_header X-Forwarded-For $remote_addr`).
Daphne believes the header's first entry, so anyone who can reach it directly could otherwise
pick their own address.

SIGINT/SIGTERM stop every child (SIGTERM, then SIGKILL after a grace period). A child that
exits on its own stops the rest too (`make run`: a failure is seen, not hidden), or, with
`--restart` (`make serve`), is started again after a short pause. On Linux each child also
gets SIGTERM if this process dies without stopping it, so nothing is left behind.
"""

import argparse
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from config import daphne_flags

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
GRACE_SECONDS = 10
QUEUES = "high,default,webhooks"


def _die_with_parent() -> None:
    """Runs in the child before exec: ask the kernel for SIGTERM when the launcher dies."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def embedded_broker(environ) -> bool:
    """True when nothing else runs the tasks: no Redis and no broker of the operator's own."""
    if environ.get("REDIS_URL"):
        return False
    return environ.get("CELERY_BROKER_URL", "filesystem://").startswith("filesystem://")


def worker_command(run_dir: Path) -> list[str]:
    return [
        str(BIN / "celery"),
        "--quiet",  # no banner: `make run`'s log is the site's
        "-A",
        "config",
        "worker",
        "--beat",
        "--schedule-filename",
        str(run_dir / "celerybeat-schedule"),
        "-Q",
        QUEUES,
        "--hostname",
        "embedded@%h",
        "--concurrency",
        os.environ.get("CELERY_CONCURRENCY", "2"),
        "--loglevel",
        os.environ.get("CELERY_LOG_LEVEL", "WARNING"),
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


def daphne_command(daphne: str, fd: int, *, proxy_headers: bool) -> list[str]:
    proxy = ["--proxy-headers"] if proxy_headers else []
    return [daphne, *daphne_flags.flags(), "--fd", str(fd), *proxy, "config.asgi:application"]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def announce_when_ready(host: str, port: int, *, timeout: float = 120.0) -> bool:
    """Print "Ready: <url>" once the site answers (the socket is bound before Daphne runs,
    so a connection alone proves nothing; an HTTP answer from /healthz does)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 (a display name)
    url = f"http://{shown}:{port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}healthz", timeout=2):  # noqa: S310 (our own)
                pass
        except urllib.error.HTTPError:
            pass  # it answered (503 while a dependency is down is still an answer)
        except OSError:
            time.sleep(0.2)
            continue
        print(f"Ready: {url}", flush=True)
        return True
    return False


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", 2)))
    parser.add_argument(
        "--restart", action="store_true", help="start a child that exits again (make serve)"
    )
    args = parser.parse_args()

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(2048)
    listener.set_inheritable(True)
    fd = listener.fileno()
    daphne = daphne_command(str(BIN / "daphne"), fd, proxy_headers=_env_flag("PROXY_HEADERS"))

    env = dict(os.environ)
    commands = [(daphne, (fd,))] * max(1, args.workers)
    with_worker = embedded_broker(env)
    if with_worker:
        env["CELERY_BROKER_URL"] = "filesystem://localhost/"  # the host is only a name here
        run_dir = Path(env.setdefault("RUN_DIR", str(ROOT / ".run")))
        run_dir.mkdir(parents=True, exist_ok=True)
        commands.append((worker_command(run_dir), ()))

    def spawn(index: int) -> subprocess.Popen:
        # Each child leads its own process group: a terminal's Ctrl-C reaches only this
        # process, which stops each child once and in order, and a child's own children
        # (Celery's pool and beat) can be found and killed with it.
        command, fds = commands[index]
        return subprocess.Popen(
            command, pass_fds=fds, env=env, process_group=0, preexec_fn=_die_with_parent
        )

    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    children = [spawn(index) for index in range(len(commands))]
    print(
        f"starting http://{args.host}:{args.port} with {args.workers} Daphne process(es)"
        + (f" and a Celery worker with beat (broker in {env['RUN_DIR']})" if with_worker else ""),
        flush=True,
    )
    threading.Thread(target=announce_when_ready, args=(args.host, args.port), daemon=True).start()
    status = 0
    while not stopping:
        for index, child in enumerate(children):
            if child.poll() is None or stopping:
                continue
            name = Path(commands[index][0][0]).name
            print(f"{name} {child.pid} exited ({child.returncode})", flush=True)
            if not args.restart:
                stopping, status = True, child.returncode or 1
                break
            time.sleep(0.5)
            children[index] = spawn(index)
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.terminate()  # Celery: a warm shutdown, running tasks finish
    deadline = time.monotonic() + GRACE_SECONDS
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)  # whatever it left behind in its group
    return status


if __name__ == "__main__":
    sys.exit(main())
