"""`make run` as a newcomer starts it (fresh SQLite, nothing else configured): Daphne, a Celery
worker and beat on the filesystem broker (config/serve.py). The periodic work runs by itself:
a submitted milestone whose review window passes is released with nobody making a request.
The API is only polled to observe. Stopping the launcher stops every process it started."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
# 0.0002 days is 17.28 s.
REVIEW_WINDOW_SECONDS = 0.0002 * 86400

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _env(directory: str, port: int) -> dict:
    drop = {
        "DATABASE_URL",
        "REDIS_URL",
        "DJANGO_SETTINGS_MODULE",
        "CELERY_TASK_ALWAYS_EAGER",
        "CELERY_BROKER_URL",
        "RUN_DIR",
        "DEBUG",
        "MAKEFLAGS",
        "MFLAGS",
    }
    env = {key: value for key, value in os.environ.items() if key not in drop}
    env.update(
        SQLITE_PATH=os.path.join(directory, "db.sqlite3"),
        RUN_DIR=os.path.join(directory, "run"),
        PORT=str(port),
        MILESTONE_REVIEW_WINDOW_DAYS="0.0002",
        LOG_LEVEL="WARNING",
    )
    return env


def _manage(env: dict, *args: str) -> str:
    result = subprocess.run(
        [PYTHON, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _descendants(root: int) -> dict[int, str]:
    """Every live process below `root`, by pid, with its command line."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = {}, [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            try:
                command = (Path("/proc") / str(pid) / "cmdline").read_bytes()
                found[pid] = command.replace(b"\0", b" ")
            except OSError:
                continue
            todo.append(pid)
    return {pid: command.decode(errors="replace") for pid, command in found.items()}


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for(check, *, seconds: float, every: float = 0.5):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not reached within {seconds} s")


@pytest.fixture
def make_run():
    """`make run` in its own session, bounded by `timeout`; whatever is left at the end is
    killed (and the test has already failed if something was)."""
    directory = tempfile.mkdtemp(prefix="make-run-e2e-")
    port = _free_port()
    env = _env(directory, port)
    log = open(os.path.join(directory, "make-run.log"), "w+b")  # noqa: SIM115
    process = subprocess.Popen(
        ["timeout", "-k", "10", "600", "make", "--no-print-directory", "run"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"

    def up():
        if process.poll() is not None:
            log.seek(0)
            pytest.fail("make run exited: " + log.read().decode(errors="replace")[-3000:])
        try:
            return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    started = {"process": process, "base": base, "env": env, "log": log, "pids": {}}
    try:
        _wait_for(up, seconds=240)
        yield started
    finally:
        leftovers = _descendants(process.pid) | started["pids"]
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        for pid in leftovers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        process.wait(timeout=10)
        log.close()


def _client(env: dict, base: str, username: str, role: str) -> tuple[httpx.Client, str]:
    _manage(env, "create_user", username, "--role", role, "--password", "pw-e2e-12345")
    key = _manage(env, "create_api_key", username).strip().splitlines()[-1]
    client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    return client, key


def _receive_until(websocket, event_type: str, *, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        message = json.loads(websocket.recv(timeout=max(0.1, deadline - time.monotonic())))
        if message.get("type") == event_type:
            return message


def test_make_run_releases_a_milestone_when_its_review_window_passes_and_stops_cleanly(make_run):
    """Given `make run` with a 17-second review window, when a funded milestone is submitted
    and nobody answers, then it is released within a minute of the window's end (beat and the
    worker did it; the API was only read), the contractor's WebSocket on Daphne sees what the
    worker committed (funding, release), and SIGTERM to the launcher stops Daphne, the
    worker and beat, leaving no process behind."""
    env, base = make_run["env"], make_run["base"]
    processes = _descendants(make_run["process"].pid)
    make_run["pids"].update(processes)
    commands = " | ".join(processes.values())
    assert "daphne" in commands and "-A config worker --beat" in commands
    assert httpx.get(f"{base}/healthz").json()["checks"]["broker"]["detail"] == "filesystem"

    homeowner, _ = _client(env, base, "run-e2e-home", "homeowner")
    contractor, contractor_key = _client(env, base, "run-e2e-pro", "contractor")
    project = homeowner.post(
        "/api/v1/projects",
        json={
            "title": "Deck",
            "contractor": "run-e2e-pro",
            "currency": "usd",
            "milestones": [{"title": "Boards", "amount": 80_000}],
        },
    ).json()
    milestone_id = project["milestones"][0]["id"]
    homeowner.post(f"/api/v1/projects/{project['id']}/sign")
    contractor.post(f"/api/v1/projects/{project['id']}/sign")
    port = base.rsplit(":", 1)[1]
    url = f"ws://127.0.0.1:{port}/ws/?token={contractor_key}"
    with connect(url, open_timeout=10) as websocket:
        websocket.send(json.dumps({"type": "subscribe", "channels": [f"project.{project['id']}"]}))
        assert json.loads(websocket.recv(timeout=10))["type"] == "subscribed"
        method = homeowner.post("/api/v1/payment-methods", json={"token": "pm_card_visa"}).json()
        funded = homeowner.post(
            f"/api/v1/milestones/{milestone_id}/fund", json={"payment_method": method["id"]}
        )
        assert funded.status_code == 201, funded.text
        # The worker processes the payment and the sandbox's signed webhook.
        _wait_for(
            lambda: (
                contractor.get(f"/api/v1/milestones/{milestone_id}").json()["status"] == "funded"
            ),
            seconds=60,
        )
        funded_event = _receive_until(websocket, "milestone.funded", seconds=10)
        assert funded_event["data"]["milestone_id"] == milestone_id

        submitted = contractor.post(f"/api/v1/milestones/{milestone_id}/submit")
        assert submitted.json()["status"] == "submitted"
        assert contractor.get(f"/api/v1/milestones/{milestone_id}").json()["status"] == "submitted"

        _wait_for(
            lambda: (
                contractor.get(f"/api/v1/milestones/{milestone_id}").json()["status"] == "released"
            ),
            seconds=REVIEW_WINDOW_SECONDS + 60,
            every=1.0,
        )
        released = _receive_until(websocket, "milestone.released", seconds=10)
        assert released["data"]["milestone_id"] == milestone_id
    # The payout (started after the release) is paid by the worker and the sandbox's webhook.
    _wait_for(
        lambda: (
            contractor.get("/api/v1/balances").json()["usd"]
            == {"escrow_held": 0, "pending": 0, "payable": 0, "paid_out": 76_000}
        ),
        seconds=60,
    )

    launcher = next(pid for pid, command in processes.items() if "config.serve" in command)
    os.kill(launcher, signal.SIGTERM)
    make_run["process"].wait(timeout=30)
    assert [command for pid, command in processes.items() if _alive(pid)] == []


def test_when_one_process_exits_the_launcher_stops_the_others(tmp_path):
    """Given the launcher with Daphne and the worker running, when the worker dies (SIGKILL),
    then the launcher stops Daphne and the worker's own children, and exits non-zero."""
    env = _env(str(tmp_path), _free_port())
    launcher = subprocess.Popen(
        ["timeout", "-k", "10", "300", PYTHON, "-m", "config.serve", "--workers", "1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def running():
            found = _descendants(launcher.pid)
            celery = [command for command in found.values() if "celery" in command]
            # The worker, its pool and beat; and Daphne answers.
            if len(celery) < 3:
                return None
            try:
                httpx.get(f"http://127.0.0.1:{env['PORT']}/healthz", timeout=2).raise_for_status()
            except httpx.HTTPError:
                return None
            return found

        processes = _wait_for(running, seconds=120)
        worker = min(pid for pid, command in processes.items() if "celery" in command)

        os.kill(worker, signal.SIGKILL)

        assert launcher.wait(timeout=30) != 0
        assert [command for pid, command in processes.items() if _alive(pid)] == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher.pid, signal.SIGKILL)
        for pid in _descendants(launcher.pid):
            os.kill(pid, signal.SIGKILL)
        launcher.wait(timeout=10)
