"""The whole money-in path: milestone fundings end to end on the full stack, with the
homeowners watching on WebSockets.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python bench/funding.py [--fundings 800] [--homeowners 8]

It creates its own database (escrowpay_bench_funding) on the loopback server named by
DATABASE_URL, migrates it and seeds `--homeowners` homeowners, each with an API key, a verified
sandbox card and an active project with its share of pending milestones; starts a private
`redis-server`, `make serve` (WEB_CONCURRENCY Daphne processes) and one Celery worker as
`make worker` runs it (-Q high,default,webhooks, concurrency 2), with the sandbox gateway
sending its signed webhooks after SANDBOX_WEBHOOK_DELAY. Then every homeowner, with one
WebSocket connected and subscribed to its milestones, funds its next milestone through the
REST API (`POST /api/v1/milestones/{id}/fund`, keep-alive) as soon as the last request was
answered. The path of each funding: API request → payment → worker → gateway (authorize,
capture) → ledger → `payment.completed` and `milestone.funded` on the homeowner's socket;
the gateway's webhooks for the same payment arrive too and change nothing.

Printed: fundings per second (first request to last `milestone.funded`), p50/p99 of
(a) the fund request, (b) request → `payment.completed` on the socket, (c) the event written
(its timestamp, in the funding's transaction) → delivered on the socket, with the seeds'
targets beside them; then whether every funding reached its homeowner exactly once and
check_ledger's verdict. Exits 1 when a funding is lost or duplicated or the ledger is not
clean (never on speed). Loopback only; everything it starts is stopped at the end.
"""

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# bench/webhooks.py: the shared loopback plumbing.
from webhooks import (
    PY,
    ROOT,
    admin,
    app_env,
    free_port,
    loopback,
    percentile,
    stop,
    wait_http,
    with_database,
)

DB = "escrowpay_bench_funding"
REDIS_FLAGS = ["--save", "", "--appendonly", "no"]
# As `make worker` runs it (without beat: the bench measures the path, not the sweeps).
WORKER_FLAGS = ["-Q", "high,default,webhooks", "--concurrency", "2", "-l", "WARNING"]
TARGETS = {
    "fund request": "intent creation < 200 ms",
    "request → payment.completed": "confirmation < 500 ms",
    "event written → on the socket": "webhook processing < 100 ms",
}


def seed(homeowners: int, fundings: int) -> list[dict]:
    """Per homeowner: {user_id, key, method_id, milestones: [ids]}."""
    from django.db import transaction

    from accounts.models import User
    from accounts.services import api_key_create
    from escrow.models import Milestone, Project
    from payments.models import PaymentMethod

    per_homeowner = (fundings + homeowners - 1) // homeowners + 1  # one more to warm up
    contractor = User.objects.create(username="bench-contractor", role="contractor")
    seeded = []
    with transaction.atomic():
        for n in range(homeowners):
            user = User.objects.create(username=f"bench-homeowner-{n}", role="homeowner")
            _key, raw = api_key_create(user=user, name="bench")
            method = PaymentMethod.objects.create(
                user=user,
                provider="sandbox",
                token="pm_card_visa",
                brand="visa",
                last4="4242",
                status=PaymentMethod.Status.VERIFIED,
                is_default=True,
            )
            project = Project.objects.create(
                homeowner=user,
                contractor=contractor,
                title=f"Bench {n}",
                currency="usd",
                status=Project.Status.ACTIVE,
            )
            milestones = Milestone.objects.bulk_create(
                [
                    Milestone(project=project, title=f"M{i}", amount=10_000 + i, position=i)
                    for i in range(per_homeowner)
                ]
            )
            seeded.append(
                {
                    "user_id": user.pk,
                    "key": raw,
                    "method_id": method.pk,
                    "milestones": [m.pk for m in milestones],
                }
            )
    return seeded


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Barrier:
    """Every homeowner waits here after its warm-up, so all start measuring together."""

    def __init__(self, parties: int) -> None:
        self.parties, self.arrived, self.event = parties, 0, asyncio.Event()

    async def wait_for_all(self) -> None:
        self.arrived += 1
        if self.arrived >= self.parties:
            self.event.set()
        await self.event.wait()


async def homeowner(
    port: int, seeded: dict, total: list, record: dict, quiet_for: float, ready: Barrier
):
    """One homeowner: its socket, then its fundings one after another."""
    import httpx
    from websockets.asyncio.client import connect

    milestones = seeded["milestones"]
    sent: dict[int, float] = {}
    seen: dict[str, dict[int, int]] = {"payment.completed": {}, "milestone.funded": {}}
    done = asyncio.Event()
    socket = await connect(f"ws://127.0.0.1:{port}/ws/?token={seeded['key']}", open_timeout=30)
    await socket.send(
        json.dumps({"type": "subscribe", "channels": [f"user.{seeded['user_id']}.milestones"]})
    )
    while json.loads(await socket.recv()).get("type") != "subscribed":
        pass

    async def listen():
        last = time.monotonic()
        while True:
            try:
                raw = await asyncio.wait_for(socket.recv(), timeout=1.0)
            except TimeoutError:
                if done.is_set() and time.monotonic() - last > quiet_for:
                    return
                continue
            arrived, wall = time.perf_counter(), time.time()
            message = json.loads(raw)
            kind = message.get("type")
            if kind not in seen:
                continue
            last = time.monotonic()
            milestone_id = message["data"]["milestone_id"]
            seen[kind][milestone_id] = seen[kind].get(milestone_id, 0) + 1
            if seen[kind][milestone_id] > 1:
                continue
            if kind == "payment.completed" and milestone_id in sent:
                record["completed"].append(arrived - sent[milestone_id])
            if kind == "milestone.funded":
                record["funded_at"].append(arrived)
                record["delivery"].append(wall - _stamp(message["timestamp"]))

    headers = {"Authorization": f"Bearer {seeded['key']}"}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60
    ) as client:
        # Warm-up, not counted: one funding, waited for on the socket, so the worker and every
        # server process are up and warm before the clock starts.
        warm, milestones = milestones[0], milestones[1:]
        await client.post(
            f"/api/v1/milestones/{warm}/fund", json={"payment_method": seeded["method_id"]}
        )
        while True:
            message = json.loads(await asyncio.wait_for(socket.recv(), timeout=120))
            if message.get("type") == "milestone.funded":
                break
        await ready.wait_for_all()
        listener = asyncio.create_task(listen())
        for milestone_id in milestones:
            if total[0] <= 0:
                break
            total[0] -= 1
            started = time.perf_counter()
            sent[milestone_id] = started
            record["first"] = min(record.get("first", started), started)
            answer = await client.post(
                f"/api/v1/milestones/{milestone_id}/fund",
                json={"payment_method": seeded["method_id"]},
            )
            record["request"].append(time.perf_counter() - started)
            record["statuses"][answer.status_code] = (
                record["statuses"].get(answer.status_code, 0) + 1
            )
            if answer.status_code == 201:
                record["funded_ids"].add(milestone_id)
    done.set()
    await listener
    await socket.close()
    record["seen"].append(seen)


async def drive(port: int, seeded: list[dict], fundings: int, quiet_for: float) -> dict:
    record = {
        "request": [],
        "completed": [],
        "delivery": [],
        "funded_at": [],
        "statuses": {},
        "funded_ids": set(),
        "seen": [],
    }
    total = [fundings]
    ready = Barrier(len(seeded))
    await asyncio.gather(*(homeowner(port, s, total, record, quiet_for, ready) for s in seeded))
    return record


def verdict(record: dict) -> tuple[int, int, int]:
    """(funded on the socket exactly once, lost, duplicated) over the accepted fundings."""
    funded = {}
    for seen in record["seen"]:
        for milestone_id, count in seen["milestone.funded"].items():
            funded[milestone_id] = funded.get(milestone_id, 0) + count
    once = sum(1 for m in record["funded_ids"] if funded.get(m) == 1)
    lost = sum(1 for m in record["funded_ids"] if m not in funded)
    duplicated = sum(1 for count in funded.values() if count > 1)
    return once, lost, duplicated


def table(record: dict, args, load: float) -> list[str]:
    span = (max(record["funded_at"]) - record["first"]) if record["funded_at"] else 0
    rate = len(record["funded_at"]) / span if span else 0
    lines = [
        f"{args.fundings} fundings by {args.homeowners} homeowners (one socket each), make serve "
        f"with {args.web_concurrency} Daphne processes, one worker (concurrency 2), PostgreSQL + "
        f"Redis on loopback, sandbox webhooks after {args.webhook_delay} s, load average "
        f"{load:.1f} at the end",
        "",
        f"fundings per second (first request → last milestone.funded): {rate:,.0f} "
        "(seeds: 1,000 payments/min ≈ 17/s; goal here ≥ 100/s)",
        "",
        "| measurement | count | p50 ms | p99 ms | seeds' target |",
        "|---|---:|---:|---:|---|",
    ]
    for name, values in (
        ("fund request", record["request"]),
        ("request → payment.completed", record["completed"]),
        ("event written → on the socket", record["delivery"]),
    ):
        if values:
            lines.append(
                f"| {name} | {len(values)} | {percentile(values, 0.5) * 1000:.0f} | "
                f"{percentile(values, 0.99) * 1000:.0f} | {TARGETS[name]} |"
            )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fundings", type=int, default=800)
    parser.add_argument("--homeowners", type=int, default=8)
    parser.add_argument("--web-concurrency", type=int, default=2)
    parser.add_argument("--webhook-delay", type=float, default=0.2)
    parser.add_argument(
        "--no-webhooks", action="store_true", help="the sandbox sends no webhooks (to compare)"
    )
    parser.add_argument("--quiet-for", type=float, default=10.0, help="seconds of silence")
    args = parser.parse_args()
    server = loopback(
        os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres", "database"
    )
    redis_port = free_port()
    redis_server = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), *REDIS_FLAGS],
        stdout=subprocess.DEVNULL,
    )
    try:
        return run(args, server, f"redis://127.0.0.1:{redis_port}/0")
    finally:
        redis_server.terminate()
        redis_server.wait(timeout=10)


def run(args, server: str, redis_url: str) -> int:
    import redis

    database_url = with_database(server, DB)
    admin(server, f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)', f'CREATE DATABASE "{DB}"')
    for _ in range(50):
        try:
            redis.Redis.from_url(redis_url).ping()
            break
        except redis.ConnectionError:
            time.sleep(0.1)
    env = app_env(
        database_url,
        redis_url,
        SANDBOX_WEBHOOK_DELIVERY="off" if args.no_webhooks else "auto",
        SANDBOX_WEBHOOK_DELAY=str(args.webhook_delay),
        THROTTLE_USER="1000000/min",
    )
    subprocess.run(
        [PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    os.environ.update({k: v for k, v in env.items() if k != "PATH"})
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connections

    seeded = seed(args.homeowners, args.fundings)
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
    worker = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "celery"), "-A", "config", "worker", *WORKER_FLAGS],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_http(port)
        record = asyncio.run(drive(port, seeded, args.fundings, args.quiet_for))
    finally:
        os.killpg(serve.pid, 15)
        try:
            serve.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, 9)
        stop(worker)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, 9)  # any pool process left behind

    from escrow.models import Milestone

    funded_rows = Milestone.objects.filter(status=Milestone.Status.FUNDED).count()
    check = subprocess.run(
        [PY, "manage.py", "check_ledger"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    connections.close_all()
    admin(server, f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')

    once, lost, duplicated = verdict(record)
    print("\n".join(table(record, args, os.getloadavg()[0])))
    print(
        f"\nfund answers {record['statuses']}; {funded_rows} milestones funded in the database; "
        f"on the sockets: {once} funded exactly once, {lost} lost, {duplicated} duplicated; "
        f"check_ledger (exit {check.returncode}): "
        f"{check.stdout.strip()[-200:] or check.stderr.strip()[-200:]}"
    )
    clean = check.returncode == 0 and lost == 0 and duplicated == 0
    # Every measured funding, plus each homeowner's warm-up, is funded in the database.
    clean = clean and once == len(record["funded_ids"]) == funded_rows - args.homeowners
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
