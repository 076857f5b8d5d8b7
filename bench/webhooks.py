"""Gateway webhooks: signed deliveries accepted per second by `make serve` (Daphne, PostgreSQL,
Redis) from concurrent senders, with p50/p99, then events fully processed per second by one
Celery worker (payment completed, milestone funded, ledger posted, events emitted).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python bench/webhooks.py [--events 6000] [--senders 8] [--web-concurrency 2]

It creates its own database (escrowpay_bench_webhooks) on the loopback server named by
DATABASE_URL, migrates it, seeds one payment in `processing` (milestone `funding`) per event,
and then:
1. starts `make serve` on a free port with the worker stopped, and has `--senders` concurrent
   keep-alive connections POST one signed `payment_intent.succeeded` per payment to
   /webhooks/sandbox/ (each answered 2xx once stored and enqueued); then sends 1,000 of them
   again (duplicates: 2xx, nothing stored);
2. stops the server and starts one `celery worker -Q webhooks` process, first with
   concurrency 1 for the first half of the queue, then with concurrency 2 (the Makefile's
   `make worker` setting) for the rest; the rate is events processed between the first and
   the last `processed_at` of each half;
3. checks every payment is completed with one ledger entry, runs `check_ledger`, prints the
   table and drops the database.
Redis: a private `redis-server` on a free loopback port, started and stopped by the script
(the machine's shared Redis is used by other test runs that flush it, which would lose the
queued tasks mid-measurement).
"""

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
DB = "escrowpay_bench_webhooks"
SECRET = "whsec_bench"
PY = str(ROOT / ".venv" / "bin" / "python")


def loopback(url: str, name: str) -> str:
    host = urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit(f"refusing to benchmark a non-loopback {name}: {host}")
    return url


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def admin(url: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(with_database(url, "postgres"), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def app_env(database_url: str, redis_url: str, **extra) -> dict:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DEBUG": "false",
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "SANDBOX_WEBHOOK_SECRET": SECRET,
        "SANDBOX_WEBHOOK_DELIVERY": "off",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
        "THROTTLE_ANON": "1000000/min",
    }
    env.update(extra)
    return env


# --- seeding ---------------------------------------------------------------------------------


def seed(count: int) -> list[bytes]:
    """One processing payment per event; returns the signed-later bodies in order."""
    from django.db import transaction

    from accounts.models import User
    from escrow.models import Milestone, Project
    from payments.models import Payment

    homeowner = User.objects.create(username="bench-homeowner", role="homeowner")
    contractor = User.objects.create(username="bench-contractor", role="contractor")
    bodies = []
    per_project = 20
    with transaction.atomic():
        projects = Project.objects.bulk_create(
            [
                Project(
                    homeowner=homeowner,
                    contractor=contractor,
                    title=f"Bench {n}",
                    currency="usd",
                    status="active",
                )
                for n in range((count + per_project - 1) // per_project)
            ]
        )
        milestones = Milestone.objects.bulk_create(
            [
                Milestone(
                    project=projects[n // per_project],
                    title=f"M{n}",
                    amount=10_000 + n,
                    position=n % per_project,
                    status="funding",
                )
                for n in range(count)
            ]
        )
        payments = Payment.objects.bulk_create(
            [
                Payment(
                    milestone=milestone,
                    project_id=milestone.project_id,
                    payer=homeowner,
                    payee=contractor,
                    provider="sandbox",
                    amount=milestone.amount,
                    currency="usd",
                    status="processing",
                    gateway_payment_id=f"pi_bench_{milestone.pk}",
                )
                for milestone in milestones
            ]
        )
    for payment in payments:
        event = {
            "id": f"evt_bench_{payment.pk}",
            "object": "event",
            "type": "payment_intent.succeeded",
            "created": int(time.time()),
            "data": {
                "object": {
                    "id": payment.gateway_payment_id,
                    "object": "payment_intent",
                    "status": "succeeded",
                    "amount": payment.amount,
                    "currency": "usd",
                    "latest_charge": f"ch_bench_{payment.pk}",
                    "metadata": {"payment_id": str(payment.pk)},
                }
            },
        }
        bodies.append(json.dumps(event, separators=(",", ":")).encode())
    return bodies


# --- the senders -----------------------------------------------------------------------------


def request_bytes(port: int, body: bytes) -> bytes:
    from payments.signatures import sign

    head = (
        f"POST /webhooks/sandbox/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Stripe-Signature: {sign(body, SECRET)}\r\n\r\n"
    )
    return head.encode() + body


async def send_all(port: int, requests: list[bytes], senders: int) -> tuple[list, dict, float]:
    """`senders` keep-alive connections, each sending its next request when the last one was
    answered. Returns latencies (s), status counts and the elapsed time."""
    queue = list(reversed(requests))
    latencies, statuses = [], {}

    async def sender():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while queue:
                payload = queue.pop()
                started = time.perf_counter()
                writer.write(payload)
                await writer.drain()
                status_line = await reader.readline()
                length = 0
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                status = int(status_line.split()[1])
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(senders)))
    return latencies, statuses, time.perf_counter() - started


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def wait_http(port: int, seconds: float = 90) -> None:
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("make serve did not come up")


def session_cpu_seconds(session_id: int) -> float:
    """User + system CPU of every live process in a session (the server's Daphne processes),
    a figure the other load on a shared machine disturbs far less than requests per second."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session_id:  # field 6 of stat: the session id
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


# --- the worker ------------------------------------------------------------------------------


def processed_count() -> int:
    from payments.models import WebhookEvent

    return WebhookEvent.objects.filter(status="processed").count()


def drain(env: dict, concurrency: int, until: int, timeout: float) -> tuple[float, int]:
    """Run one worker until `until` events are processed. Returns its CPU seconds from its
    first processed event on (so not its start-up) and the events processed in that time."""
    worker = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "celery"),
            "-A",
            "config",
            "worker",
            "-Q",
            "webhooks",
            "--concurrency",
            str(concurrency),
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            os.environ.get("BENCH_WORKER_LOG_LEVEL", "WARNING"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    cpu, cpu_from, count_from = 0.0, None, 0
    deadline = time.monotonic() + timeout
    last, last_change = processed_count(), time.monotonic()
    try:
        while last < until and time.monotonic() < deadline:
            if worker.poll() is not None:
                raise RuntimeError("the worker exited")
            time.sleep(0.05 if cpu_from is None else 0.2)
            count = processed_count()
            if count != last:
                if cpu_from is None:
                    cpu_from, count_from = session_cpu_seconds(worker.pid), count
                last, last_change = count, time.monotonic()
            elif time.monotonic() - last_change > 60:
                raise RuntimeError(f"no progress for 60 s at {count} processed")
        cpu = session_cpu_seconds(worker.pid) - (cpu_from or 0.0)
        counted = last - count_from
    finally:
        worker.terminate()  # warm shutdown: the running task finishes and is acknowledged
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
    return cpu, counted


def rate_of(rows: list) -> tuple[int, float]:
    if len(rows) < 2:
        return len(rows), 0.0
    seconds = (rows[-1] - rows[0]).total_seconds()
    return len(rows), (len(rows) - 1) / seconds if seconds else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--web-concurrency", type=int, default=2)
    parser.add_argument("--duplicates", type=int, default=1000)
    parser.add_argument("--accept-only", action="store_true", help="skip the worker phase")
    args = parser.parse_args()
    server = loopback(
        os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres", "database"
    )
    redis_port = free_port()
    redis_server = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(redis_port),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    try:
        run(args, server, redis_url)
    finally:
        redis_server.terminate()
        redis_server.wait(timeout=10)


def run(args, server: str, redis_url: str) -> None:
    database_url = with_database(server, DB)
    admin(server, f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)', f'CREATE DATABASE "{DB}"')
    import redis

    for _ in range(50):
        try:
            redis.Redis.from_url(redis_url).ping()
            break
        except redis.ConnectionError:
            time.sleep(0.1)
    env = app_env(database_url, redis_url)
    subprocess.run(
        [PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    os.environ.update({k: v for k, v in env.items() if k != "PATH"})
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connections

    bodies = seed(args.events)
    connections.close_all()

    port = free_port()
    serve = subprocess.Popen(
        ["make", "-s", "serve", f"PORT={port}", f"WEB_CONCURRENCY={args.web_concurrency}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    rows = []
    try:
        wait_http(port)
        warm = [request_bytes(port, b"{}") for _ in range(200)]  # 400s: warms every process
        asyncio.run(send_all(port, warm, args.senders))
        requests = [request_bytes(port, body) for body in bodies]
        cpu = session_cpu_seconds(serve.pid)
        latencies, statuses, elapsed = asyncio.run(send_all(port, requests, args.senders))
        cpu = session_cpu_seconds(serve.pid) - cpu
        rows.append(("accepted (new events)", len(requests), elapsed, latencies, statuses, cpu))
        duplicates = requests[: args.duplicates]
        requests = [request_bytes(port, body) for body in bodies[: args.duplicates]]
        cpu = session_cpu_seconds(serve.pid)
        latencies, statuses, elapsed = asyncio.run(send_all(port, requests, args.senders))
        cpu = session_cpu_seconds(serve.pid) - cpu
        rows.append(("accepted (duplicates)", len(duplicates), elapsed, latencies, statuses, cpu))
    finally:
        os.killpg(serve.pid, 15)
        try:
            serve.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, 9)

    from payments.models import WebhookEvent

    stored = WebhookEvent.objects.count()
    queued = redis.Redis.from_url(redis_url).llen("webhooks")
    print(f"after accepting: {stored} inbox rows, {queued} tasks queued", flush=True)
    half = args.events // 2
    cpu_first = cpu_second = 0.0
    counted_first = counted_second = 0
    if not args.accept_only:
        cpu_first, counted_first = drain(env, 1, half, timeout=900)
        cpu_second, counted_second = drain(env, 2, args.events, timeout=900)
    times = list(
        WebhookEvent.objects.filter(status="processed")
        .order_by("processed_at")
        .values_list("processed_at", flat=True)
    )
    first_count = min(half, len(times))
    first = rate_of(times[:first_count])
    second = rate_of(times[first_count:])

    from escrow.models import JournalEntry
    from payments.models import Payment

    completed = Payment.objects.filter(status="completed").count()
    entries = JournalEntry.objects.filter(kind="fund").count()
    check = subprocess.run(
        [PY, "manage.py", "check_ledger"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    connections.close_all()
    admin(server, f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')

    print(
        f"\n{args.events} events, {args.senders} concurrent senders (keep-alive), "
        f"make serve with {args.web_concurrency} Daphne processes, PostgreSQL + Redis on loopback, "
        f"enqueue {os.environ.get('PAYMENTS_WEBHOOK_ENQUEUE', 'batched')}, "
        f"load average {os.getloadavg()[0]:.1f} at the end"
    )
    print(
        "\n| measurement | requests | per second | p50 ms | p99 ms | server CPU ms/request "
        "| statuses |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, count, elapsed, latencies, statuses, cpu in rows:
        print(
            f"| {name} | {count} | {count / elapsed:,.0f} | "
            f"{statistics.median(latencies) * 1000:.1f} | "
            f"{percentile(latencies, 0.99) * 1000:.1f} | {cpu * 1000 / count:.2f} | "
            f"{statuses} |"
        )
    print(
        "\n| processing (one worker process, -Q webhooks) | events | events/s "
        "| worker CPU ms/event (after start-up) |"
    )
    print("|---|---:|---:|---:|")
    per_first = cpu_first * 1000 / counted_first if counted_first else 0
    per_second = cpu_second * 1000 / counted_second if counted_second else 0
    print(f"| concurrency 1 | {first[0]} | {first[1]:,.0f} | {per_first:.1f} |")
    print(f"| concurrency 2 (make worker) | {second[0]} | {second[1]:,.0f} | {per_second:.1f} |")
    print(
        f"\nstored {stored} inbox rows; {completed} payments completed; {entries} fund entries; "
        f"check_ledger: {check.stdout.strip() or check.stderr.strip()[-200:]}"
    )


if __name__ == "__main__":
    main()
