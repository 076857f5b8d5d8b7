"""Ledger postings per second from parallel workers on PostgreSQL, beside pgbench's TPC-B-like
figure measured in the same run on the same server.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/ledger.py
        [--seconds 15] [--workers 8] [--contractors 50] [--mode ledger|services|both]

It creates its own databases (escrowpay_bench for the app, escrowpay_pgbench for pgbench) on the
server named by DATABASE_URL (loopback), migrates the first, runs both measurements for a
bounded time each, prints a table and drops both databases again.

Each ledger worker is a separate process with its own connection. Per milestone it commits two
transactions, as the services do: the funding (lock the milestone, Dr gateway:sandbox / Cr
escrow:milestone:<id>, status funded) and the release (lock the milestone, Dr escrow / Cr
payable:user:<contractor> amount − fee / Cr revenue:fees fee, status released). The milestone
lock and status write are plain SQL here so that the figure is the ledger's. Every worker
shares gateway:sandbox and revenue:fees; 50 contractors share their payables across workers.
`--mode services` drives the full services instead (fund start, funded, submit, approve:
events, locks and all), which is the figure an API client sees.
"""

import argparse
import multiprocessing as mp
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
APP_DB = "escrowpay_bench"
PGBENCH_DB = "escrowpay_pgbench"
CHUNK = 400  # milestones a worker creates at a time (outside its timed transactions)


# --- databases --------------------------------------------------------------------------------


def server_url() -> str:
    url = os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres"
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit(f"refusing to benchmark a non-loopback server: {parts.hostname}")
    return url


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def admin(url: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(with_database(url, "postgres"), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def recreate(url: str, name: str) -> None:
    admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')


def drop(url: str, name: str) -> None:
    admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = with_database(url, APP_DB)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["DB_POOL_MIN_SIZE"] = "1"
    os.environ["DB_POOL_MAX_SIZE"] = "2"
    os.environ.pop("REDIS_URL", None)  # no channel layer or cache needed: nothing publishes
    os.environ["CELERY_TASK_ALWAYS_EAGER"] = "true"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


# --- the app's side ---------------------------------------------------------------------------


def seed(contractors: int) -> list[tuple[int, int]]:
    """Users and one active project per contractor; returns (project id, contractor id)."""
    from django.utils import timezone

    from accounts.models import User
    from escrow.models import Project

    homeowner = User.objects.create(username="bench-homeowner", role=User.Role.HOMEOWNER)
    people = User.objects.bulk_create(
        [
            User(username=f"bench-contractor-{n}", role=User.Role.CONTRACTOR)
            for n in range(contractors)
        ]
    )
    now = timezone.now()
    projects = Project.objects.bulk_create(
        [
            Project(
                homeowner=homeowner,
                contractor=person,
                title=f"Bench {n}",
                currency="usd",
                status=Project.Status.ACTIVE,
                homeowner_signed_at=now,
                contractor_signed_at=now,
            )
            for n, person in enumerate(people)
        ]
    )
    return [(project.pk, project.contractor_id) for project in projects]


def new_milestones(projects: list[tuple[int, int]], worker: int, start: int) -> list:
    from escrow.models import Milestone

    return Milestone.objects.bulk_create(
        [
            Milestone(
                project_id=projects[(worker + n) % len(projects)][0],
                title=f"w{worker}-{n}",
                amount=10_000 + (n * 7919) % 900_000,
                position=n,
            )
            for n in range(start, start + CHUNK)
        ]
    )


_LOCK_MILESTONE = (
    "SELECT m.id, m.amount, m.project_id, p.currency, p.homeowner_id, p.contractor_id "
    "FROM escrow_milestone m JOIN escrow_project p ON p.id = m.project_id "
    "WHERE m.id = %s FOR UPDATE OF m"
)
_SET_STATUS = "UPDATE escrow_milestone SET status = %s, funded_via = 'sandbox' WHERE id = %s"


def lock_milestone(milestone_id: int, *, status: str):
    """The services' first step, in plain SQL so the figure is the ledger's: lock the milestone
    row and write its new status (the ORM path is what `--mode services` measures)."""
    from django.db import connection

    from escrow.models import Milestone, Project

    with connection.cursor() as cursor:
        cursor.execute(_LOCK_MILESTONE, [milestone_id])
        pk, amount, project_id, currency, homeowner_id, contractor_id = cursor.fetchone()
        cursor.execute(_SET_STATUS, [status, milestone_id])
    project = Project(
        id=project_id, currency=currency, homeowner_id=homeowner_id, contractor_id=contractor_id
    )
    return Milestone(id=pk, amount=amount, project=project, status=status, funded_via="sandbox")


def ledger_cycle(milestone_id: int) -> tuple[int, int]:
    """Fund then release one milestone through escrow.ledger, as the services do (each its own
    transaction, milestone row locked first). Returns (entries, postings) committed."""
    from django.db import transaction

    from escrow import ledger, money
    from escrow.models import JournalEntry, Milestone

    with transaction.atomic():
        milestone = lock_milestone(milestone_id, status=Milestone.Status.FUNDED)
        ledger.post_funding(
            milestone=milestone,
            amount=milestone.amount,
            provider="sandbox",
            reference=f"bench-payment-{milestone_id}",
        )
    with transaction.atomic():
        milestone = lock_milestone(milestone_id, status=Milestone.Status.RELEASED)
        ledger.post_settlement(
            milestone=milestone,
            release_amount=milestone.amount,
            fee=money.platform_fee(milestone.amount),
            kind=JournalEntry.Kind.RELEASE,
            reference=f"release:{milestone_id}",
        )
    return 2, 5


def services_cycle(milestone_id: int) -> tuple[int, int]:
    """The whole path through the services: fund start, funded (payments' two transactions),
    submit, approve (release with events). Returns (entries, postings) committed."""
    from django.db import transaction

    from escrow import services
    from escrow.models import Milestone

    milestone = Milestone.objects.select_related("project__homeowner", "project__contractor").get(
        pk=milestone_id
    )
    project = milestone.project
    with transaction.atomic():
        services.milestone_fund_start(milestone_id=milestone_id, actor=project.homeowner)
    with transaction.atomic():
        services.milestone_funded(
            milestone_id=milestone_id,
            amount=milestone.amount,
            currency="usd",
            reference=f"bench-payment-{milestone_id}",
            provider="sandbox",
        )
    services.milestone_submit(milestone_id=milestone_id, actor=project.contractor)
    services.milestone_approve(milestone_id=milestone_id, actor=project.homeowner)
    return 2, 5


def worker(url, mode, worker_id, projects, ready, go, stop_at, results):
    setup_django(url)
    from django.db import connections

    from escrow import hooks

    hooks._handlers.clear()  # the bench measures escrow, not payouts started after commit
    cycle = ledger_cycle if mode == "ledger" else services_cycle
    pool = [m.pk for m in new_milestones(projects, worker_id, 0)]
    created = CHUNK
    ready.put(worker_id)
    statements = [0]

    def count(execute, sql, params, many, context):
        statements[0] += 1
        return execute(sql, params, many, context)

    go.wait()
    entries = postings = transactions = 0
    cpu_started = time.process_time()
    with connections["default"].execute_wrapper(count):
        while time.time() < stop_at.value:
            if not pool:
                pool = [m.pk for m in new_milestones(projects, worker_id, created)]
                created += CHUNK
            made_entries, made_postings = cycle(pool.pop())
            entries += made_entries
            postings += made_postings
            transactions += 2 if mode == "ledger" else 4
    cpu = time.process_time() - cpu_started
    connections.close_all()
    # BEGIN and COMMIT are round trips too, outside the execute wrapper.
    results.put((worker_id, entries, postings, transactions, statements[0] + 2 * transactions, cpu))


def release_connections() -> None:
    from django.db import connections

    connections.close_all()
    connections["default"].close_pool()  # the pool keeps server sessions open otherwise


def measure_app(url: str, *, mode: str, workers: int, seconds: float, contractors: int) -> dict:
    release_connections()
    recreate(url, APP_DB)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    projects = seed(contractors)
    release_connections()
    context = mp.get_context("spawn")
    ready, results = context.Queue(), context.Queue()
    go = context.Event()
    stop_at = context.Value("d", 0.0)
    processes = [
        context.Process(
            target=worker,
            args=(url, mode, n, projects, ready, go, stop_at, results),
            daemon=True,
        )
        for n in range(workers)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get(timeout=120)
    started = time.time()
    stop_at.value = started + seconds
    go.set()
    totals = [results.get(timeout=seconds + 120) for _ in processes]
    elapsed = time.time() - started
    for process in processes:
        process.join(timeout=30)

    from escrow import invariants

    violations = invariants.violations()
    release_connections()
    return {
        "entries": sum(t[1] for t in totals),
        "postings": sum(t[2] for t in totals),
        "transactions": sum(t[3] for t in totals),
        "round_trips": sum(t[4] for t in totals),
        "worker_cpu": sum(t[5] for t in totals),
        "seconds": elapsed,
        "violations": violations,
    }


# --- pgbench ----------------------------------------------------------------------------------


def measure_pgbench(url: str, *, clients: int, seconds: int) -> tuple[float, str]:
    parts = urlsplit(url)
    env = {**os.environ, "PGHOST": parts.hostname, "PGPORT": str(parts.port or 5432)}
    env["PGUSER"] = parts.username or "postgres"
    if parts.password:
        env["PGPASSWORD"] = parts.password
    recreate(url, PGBENCH_DB)
    try:
        subprocess.run(
            ["pgbench", "-i", "-q", "-s", str(clients), PGBENCH_DB],
            env=env,
            check=True,
            capture_output=True,
            timeout=300,
        )
        command = ["pgbench", "-c", str(clients), "-j", "2", "-T", str(seconds), PGBENCH_DB]
        run = subprocess.run(
            command, env=env, check=True, capture_output=True, text=True, timeout=seconds + 120
        )
    finally:
        drop(url, PGBENCH_DB)
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", run.stdout)
    if match is None:
        match = re.search(r"tps = ([0-9.]+)", run.stdout)
    return float(match.group(1)), " ".join(command)


# --- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--contractors", type=int, default=50)
    parser.add_argument("--mode", choices=["ledger", "services", "both"], default="ledger")
    parser.add_argument("--no-pgbench", action="store_true", help="only the escrow side")
    args = parser.parse_args()
    url = server_url()
    setup_django(url)

    modes = ["ledger", "services"] if args.mode == "both" else [args.mode]
    rows = []
    try:
        for mode in modes:
            result = measure_app(
                url,
                mode=mode,
                workers=args.workers,
                seconds=args.seconds,
                contractors=args.contractors,
            )
            rows.append((mode, result))
    finally:
        release_connections()
        drop(url, APP_DB)
    if args.no_pgbench:
        pgbench_tps, pgbench_command = float("nan"), "(skipped)"
    else:
        pgbench_tps, pgbench_command = measure_pgbench(
            url, clients=args.workers, seconds=args.seconds
        )

    print(f"\n{args.workers} workers, {args.seconds} s each, server {urlsplit(url).netloc}")
    print(f"pgbench: {pgbench_command} (scale {args.workers})\n")
    print("| measurement | transactions/s | entries/s | postings/s | vs pgbench tps |")
    print("|---|---:|---:|---:|---:|")
    for mode, result in rows:
        seconds = result["seconds"]
        tps = result["transactions"] / seconds
        print(
            f"| escrow {mode} ({result['entries']} entries) | {tps:,.0f} | "
            f"{result['entries'] / seconds:,.0f} | {result['postings'] / seconds:,.0f} | "
            f"{100 * tps / pgbench_tps:.0f}% |"
        )
    print(f"| pgbench TPC-B-like | {pgbench_tps:,.0f} | | | 100% |")
    print()
    for mode, result in rows:
        entries = max(result["entries"], 1)
        status = "ok" if not result["violations"] else f"VIOLATIONS {result['violations'][:3]}"
        print(
            f"{mode}: {result['round_trips'] / entries:.1f} round trips and "
            f"{1000 * result['worker_cpu'] / entries:.2f} ms of worker CPU per entry; "
            f"check_ledger {status}"
        )
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
