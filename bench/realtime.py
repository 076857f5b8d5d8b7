"""WebSocket fan-out: N clients on one Daphne process, events committed at a fixed rate, each
routed to two users; commit-to-client latency, deliveries, losses (after resume), memory.

    .venv/bin/python bench/realtime.py [--clients 200] [--rate 50] [--seconds 15]
        [--client-processes 1] [--publishers 1]
    .venv/bin/python bench/realtime.py --clients 5000 --rate 500 --seconds 30 \
        --client-processes 2 --publishers 2

Loopback only. It creates (and at the end drops) the database escrowpay_rt_bench on the
PostgreSQL server named by DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres),
uses the Redis database named by BENCH_REDIS_URL (default redis://127.0.0.1:6379/12, flushed
before and after), starts one Daphne process serving config.asgi, and bounds every process with
a timeout so nothing outlives the run.

Each client is its own user with an API key and connects with `?token=`; it stays subscribed to
its default `user.<id>.payments` and also subscribes to `user.<id>.milestones`. Publishers commit
events through `realtime.events.emit` (the production path: the row in the transaction, then
on commit the sequencer's numbering, index rows and publish) on `user.<a>.payments` and
`user.<b>.payments` for two random users. A client that is dropped reconnects with
`last_event_id`; what it gets back by replay counts as delivered, so "lost" means never
delivered at all. Latency is the time from the commit in the publisher
(before sequencing) to the message arriving in the client process (same machine, same clock).
"""

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DAPHNE = str(Path(PYTHON).parent / "daphne")
APP_DB = "escrowpay_rt_bench"
# An experiment switch (BENCH_DAPHNE_GC=off): is a latency tail the garbage collector's?
DAPHNE_WITHOUT_GC = (
    "import gc, sys; gc.disable(); from daphne.cli import CommandLineInterface; "
    "sys.argv[0] = 'daphne'; CommandLineInterface.entrypoint()"
)


# --- environment ------------------------------------------------------------------------------


def loopback(url: str, what: str) -> str:
    host = urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit(f"refusing to benchmark a non-loopback {what}: {host}")
    return url


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def bench_env(database_url: str, redis_url: str) -> dict:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        DJANGO_SETTINGS_MODULE="config.settings",
        # As in production: dispatch (notifications, webhooks) is queued for a Celery worker
        # (none runs here; the queue is flushed with the Redis database afterwards).
        CELERY_TASK_ALWAYS_EAGER="false",
        DEBUG="false",
        LOG_LEVEL="WARNING",
        ALLOWED_HOSTS="localhost,127.0.0.1",
        DB_POOL_MAX_SIZE="30",
        # Pub/sub is global on a Redis server: stay apart from anything else using it.
        CHANNEL_LAYER_PREFIX=f"rt-bench-{os.getpid()}",
        REALTIME_HEARTBEAT_SECONDS="25",
        PAYMENTS_RETRY_TIMERS="false",
        SANDBOX_WEBHOOK_DELIVERY="off",
    )
    env.pop("PYTEST_XDIST_WORKER", None)
    return env


def psql(server: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(sql)


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def child_pid(pid: int) -> int:
    """Daphne runs under `timeout`; its pid is the wrapper's child."""
    for _ in range(100):
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            if children:
                return int(children[0])
        except OSError:
            pass
        time.sleep(0.05)
    return pid


# --- users and keys (in this process, through Django) -----------------------------------------


def create_users(count: int) -> list[tuple[int, str]]:
    import secrets

    from django.contrib.auth.hashers import make_password

    from accounts.models import ApiKey, User

    password = make_password(None)
    users = User.objects.bulk_create(
        [User(username=f"rt{index}", role="homeowner", password=password) for index in range(count)]
    )
    keys, rows = [], []
    for user in users:
        prefix = secrets.token_hex(4)
        raw = f"{ApiKey.PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
        rows.append(ApiKey(user=user, name="bench", prefix=prefix, key_hash=ApiKey.hash(raw)))
        keys.append((user.pk, raw))
    ApiKey.objects.bulk_create(rows)
    return keys


# --- publishers ---------------------------------------------------------------------------------


def publish(user_ids, rate: float, seconds: float, out: str, seed: int):
    """Commit `rate` events a second for `seconds`, each to two users; record commit times.

    Runs in its own (forked) process, as request handlers would: with threads the GIL, not
    the database or the server, set the pace."""
    from django.db import connection, transaction

    from realtime.events import emit

    rng = random.Random(seed)
    commits = {}
    interval = 1.0 / rate
    start = time.monotonic()
    number = 0
    try:
        while True:
            due = start + number * interval
            if due - start >= seconds or time.monotonic() - start >= seconds:
                break
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            first, second = rng.sample(user_ids, 2)
            committed = {}
            with transaction.atomic():
                # Registered before emit's own callback, so it runs first: the commit time.
                transaction.on_commit(lambda c=committed: c.setdefault("at", time.time()))
                event = emit(
                    "payment.status_updated",
                    {"payment_id": number, "amount": 1000, "currency": "usd", "status": "x"},
                    aggregate=("payment", f"bench-{seed}-{number}"),
                    audience=[first, second],
                    channels=[f"user.{first}.payments", f"user.{second}.payments"],
                )
            # Keyed by row id: its position (the id clients see) is assigned by the sequencer
            # after commit, possibly by another process; main() maps them at the end.
            commits[event.pk] = (committed["at"], (first, second))
            number += 1
    finally:
        connection.close()
        Path(out).write_text(json.dumps(commits))


# --- clients (separate processes) -------------------------------------------------------------


async def run_clients(args) -> dict:
    import websockets
    from websockets.asyncio.client import connect

    pairs = json.loads(Path(args.keys_file).read_text())
    received: dict[int, list] = {user_id: [] for user_id, _ in pairs}
    state = {"open": 0, "max_open": 0, "reconnects": 0, "resync": 0, "closes": {}}
    stop_at = time.monotonic() + args.until
    stop_file = Path(args.stop_file)
    stopping = asyncio.Event()
    sockets: set = set()

    async def watch_stop_file():
        while time.monotonic() < stop_at and not stop_file.exists():
            await asyncio.sleep(0.2)
        stopping.set()
        # Reading with `async for` (no per-message timeouts, which cost more CPU than the
        # messages themselves at 5,000 clients); closing the sockets ends the loops.
        await asyncio.gather(*(websocket.close() for websocket in list(sockets)))

    ready_path = Path(args.ready_file)
    connected = asyncio.Event()
    opened = 0

    async def client(user_id: int, key: str, gate: asyncio.Semaphore):
        nonlocal opened
        last_id = None
        first = True
        while not stopping.is_set():
            try:
                async with gate if first else _null():
                    websocket = await connect(
                        f"{args.url}?token={key}",
                        open_timeout=60,
                        ping_timeout=60,
                        max_size=None,
                    )
            except (TimeoutError, OSError, websockets.InvalidHandshake):
                await asyncio.sleep(0.5)
                continue
            sockets.add(websocket)
            state["open"] += 1
            state["max_open"] = max(state["max_open"], state["open"])
            counted = not first  # ready once the server confirms the subscription
            if not first:
                state["reconnects"] += 1
            request = {"type": "subscribe", "channels": [f"user.{user_id}.milestones"]}
            if not first and last_id is not None:
                request = {
                    "type": "subscribe",
                    "channels": [f"user.{user_id}.payments", f"user.{user_id}.milestones"],
                    "last_event_id": last_id,
                }
            first = False
            try:
                await websocket.send(json.dumps(request))
                async for text in websocket:
                    now = time.time()
                    message = json.loads(text)
                    if "id" in message:
                        received[user_id].append((message["id"], now))
                        last_id = message["id"] if last_id is None else max(last_id, message["id"])
                    elif message["type"] == "resync_required":
                        state["resync"] += 1
                    elif message["type"] == "subscribed" and not counted:
                        # Its default channel was joined before this reply (the consumer
                        # joins it in connect), so events from now on reach it.
                        counted = True
                        opened += 1
                        if opened == len(pairs):
                            connected.set()
            except websockets.ConnectionClosed as closed:
                if not stopping.is_set():
                    code = closed.rcvd.code if closed.rcvd else 1006
                    state["closes"][code] = state["closes"].get(code, 0) + 1
            else:
                if not stopping.is_set():
                    state["closes"]["eof"] = state["closes"].get("eof", 0) + 1
            sockets.discard(websocket)
            state["open"] -= 1

    gate = asyncio.Semaphore(args.connect_concurrency)
    tasks = [asyncio.create_task(client(user_id, key, gate)) for user_id, key in pairs]
    watcher = asyncio.create_task(watch_stop_file())
    try:
        await asyncio.wait_for(connected.wait(), timeout=args.until)
        ready_path.write_text(str(state["open"]))
    except TimeoutError:
        ready_path.write_text(f"timeout {state['open']}")
    await asyncio.gather(*tasks)
    await watcher
    return {"received": received, **state}


class _null:
    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False


def client_main(args) -> None:
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # The clients are the measuring instrument: a full collection over 2,500 connections'
    # objects would stall this process and show up as server latency.
    gc.disable()
    result = asyncio.run(run_clients(args))
    Path(args.out).write_text(json.dumps(result))


# --- orchestration ------------------------------------------------------------------------------


def start_daphne(env: dict, log) -> tuple[subprocess.Popen, socket.socket, int]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    fd = listener.fileno()
    process = subprocess.Popen(
        [
            "timeout",
            "-k",
            "5",
            str(env["BENCH_MAX_SECONDS"]),
            *(
                [PYTHON, "-c", DAPHNE_WITHOUT_GC]
                if os.environ.get("BENCH_DAPHNE_GC") == "off"
                else [DAPHNE]
            ),
            "--fd",
            str(fd),
            "config.asgi:application",
        ],
        cwd=ROOT,
        env=env,
        pass_fds=(fd,),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    import http.client

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            connection.getresponse()
            return process, listener, port
        except OSError:
            time.sleep(0.2)
    process.kill()
    sys.exit("daphne did not start")


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50, help="events committed per second")
    parser.add_argument("--seconds", type=float, default=15, help="publishing time")
    parser.add_argument("--client-processes", type=int, default=1)
    parser.add_argument("--publishers", type=int, default=1, help="publishing processes")
    parser.add_argument("--connect-concurrency", type=int, default=200)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "client"])
    parser.add_argument("--keys-file")
    parser.add_argument("--ready-file")
    parser.add_argument("--out")
    parser.add_argument("--stop-file")
    parser.add_argument("--url")
    parser.add_argument("--until", type=float)
    args = parser.parse_args()
    # A TERM (e.g. from `timeout`) unwinds through the cleanup below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.mode == "client":
        client_main(args)
        return 0

    server = loopback(
        os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres", "database"
    )
    server = with_database(server, "postgres")
    redis_url = loopback(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"), "redis")
    database_url = with_database(server, APP_DB)
    connect_budget = max(30, args.clients / 50)
    max_seconds = int(connect_budget + args.seconds + 120)
    env = bench_env(database_url, redis_url)
    env["BENCH_MAX_SECONDS"] = str(max_seconds)
    workdir = Path(tempfile.mkdtemp(prefix="rt-bench-"))

    import redis

    redis.Redis.from_url(redis_url).flushdb()
    psql(server, f"DROP DATABASE IF EXISTS {APP_DB} WITH (FORCE)")
    psql(server, f"CREATE DATABASE {APP_DB}")
    processes: list[subprocess.Popen] = []
    try:
        subprocess.run(
            [PYTHON, "manage.py", "migrate", "--noinput"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            timeout=300,
        )
        os.environ.update(
            {
                key: env[key]
                for key in (
                    "DATABASE_URL",
                    "REDIS_URL",
                    "DJANGO_SETTINGS_MODULE",
                    "CELERY_TASK_ALWAYS_EAGER",
                    "LOG_LEVEL",
                    "DB_POOL_MAX_SIZE",
                    "CHANNEL_LAYER_PREFIX",
                )
            }
        )
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        import logging

        logging.disable(logging.WARNING)
        keys = create_users(args.clients)
        user_ids = [user_id for user_id, _ in keys]

        log = open(workdir / "daphne.log", "wb")  # noqa: SIM115
        daphne, _listener, port = start_daphne(env, log)
        processes.append(daphne)
        daphne_pid = child_pid(daphne.pid)
        rss_idle = rss_kib(daphne_pid)

        until = max_seconds - 15  # a bound only: the clients stop when told to
        chunks = [keys[index :: args.client_processes] for index in range(args.client_processes)]
        client_files = []
        for index, chunk in enumerate(chunks):
            keys_file = workdir / f"keys-{index}.json"
            keys_file.write_text(json.dumps(chunk))
            ready, out = workdir / f"ready-{index}", workdir / f"out-{index}.json"
            client_files.append((ready, out))
            processes.append(
                subprocess.Popen(
                    [
                        "timeout",
                        "-k",
                        "5",
                        str(max_seconds),
                        PYTHON,
                        __file__,
                        "client",
                        "--keys-file",
                        str(keys_file),
                        "--ready-file",
                        str(ready),
                        "--out",
                        str(out),
                        "--url",
                        f"ws://127.0.0.1:{port}/ws/",
                        "--until",
                        str(until),
                        "--stop-file",
                        str(workdir / "stop"),
                        "--connect-concurrency",
                        str(max(1, args.connect_concurrency // args.client_processes)),
                    ],
                    cwd=ROOT,
                    env=env,
                    start_new_session=True,
                )
            )
        connect_started = time.monotonic()
        while not all(ready.exists() for ready, _ in client_files):
            if time.monotonic() - connect_started > connect_budget:
                break
            time.sleep(0.2)
        connect_seconds = time.monotonic() - connect_started
        held_at_start = sum(
            int(ready.read_text().split()[-1]) for ready, _ in client_files if ready.exists()
        )
        rss_connected = rss_kib(daphne_pid)

        from django.db import connections

        # Forked children must not share the parent's pooled connections: close the pool.
        for database in connections.all():
            database.close()
            if hasattr(database, "close_pool"):
                database.close_pool()
        fork = multiprocessing.get_context("fork")
        publishers = [
            fork.Process(
                target=publish,
                args=(
                    user_ids,
                    args.rate / args.publishers,
                    args.seconds,
                    str(workdir / f"commits-{seed}.json"),
                    seed,
                ),
            )
            for seed in range(args.publishers)
        ]
        published_at = time.monotonic()
        rss_peak = rss_connected
        for publisher in publishers:
            publisher.start()
        publish_deadline = time.monotonic() + args.seconds + 60
        while any(publisher.is_alive() for publisher in publishers):
            if time.monotonic() > publish_deadline:
                for publisher in publishers:
                    publisher.kill()
                break
            rss_peak = max(rss_peak, rss_kib(daphne_pid))
            time.sleep(0.5)
        by_row = {}
        for seed in range(args.publishers):
            path = workdir / f"commits-{seed}.json"
            if path.exists():
                by_row.update(
                    {int(k): (v[0], tuple(v[1])) for k, v in json.loads(path.read_text()).items()}
                )
        publish_seconds = time.monotonic() - published_at  # with process start and exit
        commit_times = sorted(value[0] for value in by_row.values())
        commit_span = commit_times[-1] - commit_times[0] if len(commit_times) > 1 else 0.0
        # Let the last events arrive, then tell the clients to stop and report.
        time.sleep(3)
        from realtime.models import Event

        positions = dict(Event.objects.filter(pk__in=list(by_row)).values_list("pk", "position"))
        unsequenced = sum(1 for pk in by_row if positions.get(pk) is None)
        commits = {positions[pk]: value for pk, value in by_row.items() if positions.get(pk)}
        (workdir / "stop").write_text("stop")
        for process in processes[1:]:
            process.wait(timeout=max_seconds)
        rss_end = rss_kib(daphne_pid)

        received: dict[int, dict[int, float]] = {}
        state = {"max_open": 0, "reconnects": 0, "resync": 0, "closes": {}}
        for _, out in client_files:
            result = json.loads(out.read_text())
            for user_id, messages in result["received"].items():
                mine = received.setdefault(int(user_id), {})
                for event_id, at in messages:
                    mine.setdefault(event_id, at)
            state["max_open"] += result["max_open"]
            state["reconnects"] += result["reconnects"]
            state["resync"] += result["resync"]
            for code, count in result["closes"].items():
                state["closes"][code] = state["closes"].get(code, 0) + count

        expected = delivered = duplicates_ignored = 0
        latencies = []
        # p99 per 5 s of commits: is the tail spread over the run or one stretch of it?
        windows: dict[int, list[float]] = {}
        first_commit = min((value[0] for value in commits.values()), default=0.0)
        missing = []
        for event_id, (committed_at, targets) in commits.items():
            for user_id in targets:
                expected += 1
                at = received.get(user_id, {}).get(event_id)
                if at is not None:
                    delivered += 1
                    latencies.append((at - committed_at) * 1000)
                    windows.setdefault(int((committed_at - first_commit) // 5), []).append(
                        latencies[-1]
                    )
                else:
                    missing.append((event_id, user_id, committed_at))
        del duplicates_ignored
        lost = expected - delivered + 2 * unsequenced
        rows = [
            ("clients (one user each)", f"{args.clients}"),
            (
                "client / publisher processes",
                f"{args.client_processes} / {args.publishers}",
            ),
            ("connections held (all connected / peak)", f"{held_at_start} / {state['max_open']}"),
            ("time to connect all", f"{connect_seconds:.1f} s"),
            (
                "events committed",
                f"{len(commits)} in {publish_seconds:.1f} s "
                f"({len(commits) / publish_seconds:.0f}/s, target {args.rate:g}/s)",
            ),
            (
                "rate between first and last commit",
                f"{(len(commit_times) - 1) / commit_span:.0f}/s over {commit_span:.1f} s"
                if commit_span
                else "n/a",
            ),
            ("events left without a position", f"{unsequenced}"),
            ("deliveries expected / delivered", f"{expected} / {delivered}"),
            ("lost (after resume)", f"{lost}"),
            (
                "reconnects (resumed) / resync_required",
                f"{state['reconnects']} / {state['resync']}",
            ),
            ("close codes seen", json.dumps(state["closes"]) if state["closes"] else "none"),
            (
                "commit-to-client p50 / p99 / max",
                f"{percentile(latencies, 0.5):.1f} / {percentile(latencies, 0.99):.1f} / "
                f"{max(latencies) if latencies else float('nan'):.1f} ms",
            ),
            ("mean", f"{statistics.fmean(latencies) if latencies else float('nan'):.1f} ms"),
            (
                "p99 per 5 s of commits",
                " / ".join(f"{percentile(windows[key], 0.99):.0f}" for key in sorted(windows))
                + " ms",
            ),
            (
                "Daphne RSS idle / connected / peak / end",
                f"{rss_idle / 1024:.0f} / {rss_connected / 1024:.0f} / {rss_peak / 1024:.0f} / "
                f"{rss_end / 1024:.0f} MiB",
            ),
        ]
        width = max(len(name) for name, _ in rows)
        print(f"| {'measure'.ljust(width)} | value |")
        print(f"|{'-' * (width + 2)}|-------|")
        for name, value in rows:
            print(f"| {name.ljust(width)} | {value} |")
        if args.json:
            Path(args.json).write_text(json.dumps(dict(rows), indent=2))
        for event_id, user_id, committed_at in missing[:5]:
            from realtime.models import Event

            row = Event.objects.filter(position=event_id).values("channels", "published_at")
            seen = sorted(received.get(user_id, {}))
            print(
                f"\nnot delivered: event {event_id} to user {user_id}, committed "
                f"{committed_at - time.time():.1f} s from now, row {list(row)}, "
                f"user saw {len(seen)} events, neighbours "
                f"{[e for e in seen if abs(e - event_id) < 50]}"
            )
        daphne_log = (workdir / "daphne.log").read_text(errors="replace")
        errors = [line for line in daphne_log.splitlines() if '"level": "error"' in line]
        if errors:
            print(f"\n{len(errors)} error lines in the Daphne log, first: {errors[0][:300]}")
        return 0 if lost == 0 else 1
    finally:
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
        try:
            from django.db import connections

            connections.close_all()
        except Exception:
            pass
        psql(server, f"DROP DATABASE IF EXISTS {APP_DB} WITH (FORCE)")
        redis.Redis.from_url(redis_url).flushdb()


if __name__ == "__main__":
    sys.exit(main())
