"""Ledger postings per second from parallel workers on PostgreSQL, beside pgbench's TPC-B-like
figure measured in the same run on the same server.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/ledger.py
        [--seconds 10] [--rounds 3] [--workers 8] [--contractors 50]
        [--mode ledger|services|both] [--no-pgbench]

It creates its own databases (escrowpay_bench for the app, escrowpay_pgbench for pgbench) on the
server named by DATABASE_URL (loopback), migrates the first, runs the measurements for a
bounded time, prints a table and drops both databases again.

The measurements alternate: each round runs the escrow side for --seconds (its workers idle
otherwise), then pgbench for --seconds. This machine's capacity drifts by ±10% from minute to
minute, so a ratio of two figures measured minutes apart says more about the drift than about
the code; the per-round ratios and the ratio of the totals are printed.

Each ledger worker is a separate process with its own connection. Per milestone it commits two
transactions, as the services do: the funding (lock the milestone, Dr gateway:sandbox / Cr
escrow:milestone:<id>, status funded) and the release (lock the milestone, Dr escrow / Cr
payable:user:<contractor> amount − fee / Cr revenue:fees fee, status released). The milestone
lock and status write are one prepared UPDATE here, so that the figure is the ledger's: a
transaction is BEGIN, that UPDATE, the posting's one call, COMMIT (4 round trips). Every worker
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


# Lock the milestone row and write its new status in one statement: an UPDATE takes the same
# row lock as SELECT .. FOR UPDATE OF m (the project row is read, not locked) and returns what
# the posting needs.
_LOCK_AND_SET_STATUS = (
    "UPDATE escrow_milestone m SET status = %s, funded_via = 'sandbox' "
    "FROM escrow_project p WHERE p.id = m.project_id AND m.id = %s "
    "RETURNING m.id, m.amount, m.project_id, p.currency, p.homeowner_id, p.contractor_id"
)


def lock_milestone(milestone_id: int, *, status: str):
    """The services' first step, in plain SQL so the figure is the ledger's: lock the milestone
    row and write its new status (the ORM path is what `--mode services` measures). The
    statement is prepared, like the ledger's calls: planned through Django's cursor it cost
    the server more than the posting's own look-ups (pg_stat_statements, PERFORMANCE.md)."""
    from escrow.ledger import _prepared_cursor
    from escrow.models import Milestone, Project

    with _prepared_cursor() as cursor:
        cursor.execute(_LOCK_AND_SET_STATUS, [status, milestone_id])
        pk, amount, project_id, currency, homeowner_id, contractor_id = cursor.fetchone()
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


def worker(url, mode, worker_id, projects, ready, events, stop_at, results):
    """Waits for each round's event, runs cycles until that round's stop time, reports what it
    committed in the round, and waits for the next (idle while pgbench has the machine). After
    the last round it waits for `finished` before it shuts down: eight processes exiting while
    the last pgbench segment ran cost that segment a third of its transactions."""
    *rounds, finished = events
    setup_django(url)
    from django.db import connections

    from escrow import reactions

    for reaction in reactions.REACTIONS:
        reaction.handlers.clear()  # the bench measures escrow, not payouts started after commit
    cycle = ledger_cycle if mode == "ledger" else services_cycle
    pool = [m.pk for m in new_milestones(projects, worker_id, 0)]
    created = CHUNK
    ready.put(worker_id)
    statements = [0]

    def count(execute, sql, params, many, context):
        statements[0] += 1
        return execute(sql, params, many, context)

    for go in rounds:
        go.wait()
        if stop_at.value == 0:  # the run was cut short
            break
        entries = postings = transactions = 0
        statements[0] = 0
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
        # BEGIN and COMMIT are round trips too, outside the execute wrapper.
        round_trips = statements[0] + 2 * transactions
        results.put((worker_id, entries, postings, transactions, round_trips, cpu))
    finished.wait()
    connections.close_all()


def release_connections() -> None:
    from django.db import connections

    connections.close_all()
    connections["default"].close_pool()  # the pool keeps server sessions open otherwise


class App:
    """One mode's worker processes, started once and driven round by round."""

    def __init__(self, url, *, mode, workers, rounds, projects):
        context = mp.get_context("spawn")
        self.mode = mode
        self.ready, self.results = context.Queue(), context.Queue()
        self.rounds = [context.Event() for _ in range(rounds)]
        self.finished = context.Event()
        events = [*self.rounds, self.finished]
        self.stop_at = context.Value("d", 0.0)
        self.processes = [
            context.Process(
                target=worker,
                args=(url, mode, n, projects, self.ready, events, self.stop_at, self.results),
                daemon=True,
            )
            for n in range(workers)
        ]
        for process in self.processes:
            process.start()
        for _ in self.processes:
            self.ready.get(timeout=120)
        self.done = 0

    def run_round(self, seconds: float) -> dict:
        started = time.time()
        self.stop_at.value = started + seconds
        self.rounds[self.done].set()
        self.done += 1
        totals = [self.results.get(timeout=seconds + 120) for _ in self.processes]
        elapsed = time.time() - started  # until the last worker's last commit
        return {
            "entries": sum(t[1] for t in totals),
            "postings": sum(t[2] for t in totals),
            "transactions": sum(t[3] for t in totals),
            "round_trips": sum(t[4] for t in totals),
            "worker_cpu": sum(t[5] for t in totals),
            "seconds": elapsed,
        }

    def finish(self) -> None:
        self.stop_at.value = 0
        for go in self.rounds[self.done :]:
            go.set()
        self.finished.set()
        for process in self.processes:
            process.join(timeout=30)


def prepare_app_database(url: str, contractors: int) -> list[tuple[int, int]]:
    release_connections()
    recreate(url, APP_DB)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    projects = seed(contractors)
    release_connections()
    return projects


def ledger_violations() -> list:
    from escrow import invariants

    violations = invariants.violations()
    release_connections()
    return violations


# --- pgbench ----------------------------------------------------------------------------------


class Pgbench:
    """pgbench's TPC-B-like run on its own database, initialised once, run once per round."""

    def __init__(self, url: str, *, clients: int):
        parts = urlsplit(url)
        self.url = url
        self.env = {**os.environ, "PGHOST": parts.hostname, "PGPORT": str(parts.port or 5432)}
        self.env["PGUSER"] = parts.username or "postgres"
        if parts.password:
            self.env["PGPASSWORD"] = parts.password
        self.clients = clients
        recreate(url, PGBENCH_DB)
        subprocess.run(
            ["pgbench", "-i", "-q", "-s", str(clients), PGBENCH_DB],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=300,
        )

    def command(self, seconds: int) -> list[str]:
        return ["pgbench", "-c", str(self.clients), "-j", "2", "-T", str(seconds), PGBENCH_DB]

    def run_round(self, seconds: int) -> float:
        run = subprocess.run(
            self.command(seconds),
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
            timeout=seconds + 120,
        )
        match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", run.stdout)
        if match is None:
            match = re.search(r"tps = ([0-9.]+)", run.stdout)
        return float(match.group(1))

    def finish(self) -> None:
        drop(self.url, PGBENCH_DB)


# --- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="length of each segment")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--contractors", type=int, default=50)
    parser.add_argument("--mode", choices=["ledger", "services", "both"], default="ledger")
    parser.add_argument("--no-pgbench", action="store_true", help="only the escrow side")
    args = parser.parse_args()
    url = server_url()
    setup_django(url)

    modes = ["ledger", "services"] if args.mode == "both" else [args.mode]
    apps, pgbench = [], None
    per_round = []  # (round, mode or "pgbench", result or tps)
    try:
        if not args.no_pgbench:
            pgbench = Pgbench(url, clients=args.workers)
        projects = prepare_app_database(url, args.contractors)
        apps = [
            App(url, mode=mode, workers=args.workers, rounds=args.rounds, projects=projects)
            for mode in modes
        ]
        for number in range(1, args.rounds + 1):
            for app in apps:
                per_round.append((number, app.mode, app.run_round(args.seconds)))
            if pgbench is not None:
                per_round.append((number, "pgbench", pgbench.run_round(args.seconds)))
        violations = ledger_violations()  # every worker has committed its last round
    finally:
        for app in apps:
            app.finish()
        if pgbench is not None:
            pgbench.finish()
        release_connections()
        drop(url, APP_DB)
    report(args, url, modes, per_round, violations, pgbench)


def report(args, url, modes, per_round, violations, pgbench) -> None:
    tps_of = {n: tps for n, name, tps in per_round if name == "pgbench"}
    print(f"\n{args.workers} workers; {args.rounds} rounds of {args.seconds} s per measurement,")
    print("each round the escrow side first, then pgbench; server " + urlsplit(url).netloc)
    if pgbench is not None:
        command = " ".join(pgbench.command(args.seconds))
        print(f"pgbench: {command} (scale {args.workers})")
    print()
    print("| round | measurement | transactions/s | entries/s | postings/s | vs pgbench tps |")
    print("|---:|---|---:|---:|---:|---:|")
    for number, name, result in per_round:
        if name == "pgbench":
            print(f"| {number} | pgbench TPC-B-like | {result:,.0f} | | | 100% |")
            continue
        seconds = result["seconds"]
        tps = result["transactions"] / seconds
        share = f"{100 * tps / tps_of[number]:.0f}%" if number in tps_of else "n/a"
        print(
            f"| {number} | escrow {name} | {tps:,.0f} | {result['entries'] / seconds:,.0f} | "
            f"{result['postings'] / seconds:,.0f} | {share} |"
        )
    pgbench_tps = sum(tps_of.values()) / len(tps_of) if tps_of else float("nan")
    for mode in modes:
        results = [result for _, name, result in per_round if name == mode]
        seconds = sum(r["seconds"] for r in results)
        tps = sum(r["transactions"] for r in results) / seconds
        entries = max(sum(r["entries"] for r in results), 1)
        share = f"{100 * tps / pgbench_tps:.0f}%" if tps_of else "n/a"
        print(
            f"| all | escrow {mode} ({entries} entries) | {tps:,.0f} | {entries / seconds:,.0f} | "
            f"{sum(r['postings'] for r in results) / seconds:,.0f} | {share} |"
        )
    if tps_of:
        print(f"| all | pgbench TPC-B-like (mean) | {pgbench_tps:,.0f} | | | 100% |")
    print()
    for mode in modes:
        results = [result for _, name, result in per_round if name == mode]
        entries = max(sum(r["entries"] for r in results), 1)
        print(
            f"{mode}: {sum(r['round_trips'] for r in results) / entries:.1f} round trips and "
            f"{1000 * sum(r['worker_cpu'] for r in results) / entries:.2f} ms of worker CPU "
            "per entry"
        )
    status = "ok" if not violations else f"VIOLATIONS {violations[:3]}"
    print(f"check_ledger on everything written: {status}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
