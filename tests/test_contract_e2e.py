"""The public contract, driven the way an external acceptance test does: a real Daphne server
on the embedded default (fresh SQLite, eager Celery, the sandbox gateway delivering its signed
webhooks back), the contract's management commands, the REST API with Bearer keys, the
WebSocket protocol, and the incoming-webhook signature rules. Nothing here imports the
project's code; it proves the pieces fit together as CONTRACT.md says."""

import hashlib
import hmac
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

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
DAPHNE = str(Path(PYTHON).parent / "daphne")
SANDBOX_SECRET = "whsec_contract_e2e"

pytestmark = pytest.mark.e2e


def _env(sqlite_path: str) -> dict:
    drop = {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "CELERY_TASK_ALWAYS_EAGER"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(
        SQLITE_PATH=sqlite_path,
        SANDBOX_WEBHOOK_SECRET=SANDBOX_SECRET,
        PLATFORM_FEE_PERCENT="5",
        DEBUG="true",
        LOG_LEVEL="WARNING",
    )
    return env


def _manage(env: dict, *args: str) -> str:
    result = subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def server():
    """`manage.py migrate` then Daphne on a free port; stopped (and killed if need be) after."""
    directory = tempfile.mkdtemp(prefix="contract-e2e-")
    env = _env(os.path.join(directory, "db.sqlite3"))
    _manage(env, "migrate", "--noinput")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        ["timeout", "600", DAPHNE, "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("server did not start: " + process.stderr.read().decode()[-2000:])
    yield {"base": base, "port": port, "env": env}
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def _user(server, username: str, role: str) -> httpx.Client:
    _manage(server["env"], "create_user", username, "--role", role, "--password", "pw-e2e-12345")
    key = _manage(server["env"], "create_api_key", username).strip().splitlines()[-1]
    return httpx.Client(
        base_url=server["base"], headers={"Authorization": f"Bearer {key}"}, timeout=10
    ), key


def _wait_for(check, *, seconds: float = 20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def test_the_whole_journey_through_the_public_contract(server):
    """Sign, fund with a sandbox card (completed by the sandbox's own signed webhook), submit,
    inspect, approve and get paid; every step seen over the WebSocket with resume; the ledger
    check passes at the end."""
    homeowner, _ = _user(server, "e2e-home", "homeowner")
    contractor, contractor_key = _user(server, "e2e-pro", "contractor")

    assert homeowner.get("/api/v1/me").json()["role"] == "homeowner"
    created = homeowner.post(
        "/api/v1/projects",
        json={
            "title": "Porch",
            "contractor": "e2e-pro",
            "currency": "usd",
            "milestones": [{"title": "Frame", "amount": 100_000}],
        },
    )
    assert created.status_code == 201, created.text
    project = created.json()
    assert project["status"] == "draft"
    milestone_id = project["milestones"][0]["id"]
    assert homeowner.post(f"/api/v1/projects/{project['id']}/sign").json()["status"] == "draft"
    assert contractor.post(f"/api/v1/projects/{project['id']}/sign").json()["status"] == "active"

    ws_url = f"ws://127.0.0.1:{server['port']}/ws/?token={contractor_key}"
    with connect(ws_url, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "subscribe", "channels": [f"project.{project['id']}"]}))
        subscribed = json.loads(ws.recv(timeout=10))
        assert subscribed["type"] == "subscribed"
        assert f"project.{project['id']}" in subscribed["channels"]

        method = homeowner.post("/api/v1/payment-methods", json={"token": "pm_card_visa"})
        assert method.status_code == 201, method.text
        assert {"id", "brand", "last4", "status"} <= set(method.json())
        funded = homeowner.post(
            f"/api/v1/milestones/{milestone_id}/fund",
            json={"payment_method": method.json()["id"]},
            headers={"Idempotency-Key": "fund-1"},
        )
        assert funded.status_code == 201, funded.text
        payment = funded.json()
        assert payment["amount"] == 100_000 and payment["currency"] == "usd"
        assert payment["milestone"] == milestone_id

        _wait_for(
            lambda: (
                homeowner.get(f"/api/v1/payments/{payment['id']}").json()["status"] == "completed"
            )
        )
        _wait_for(
            lambda: (
                contractor.get(f"/api/v1/milestones/{milestone_id}").json()["status"] == "funded"
            )
        )
        seen = []
        while not any(m.get("type") == "milestone.funded" for m in seen):
            seen.append(json.loads(ws.recv(timeout=10)))
        funded_event = next(m for m in seen if m["type"] == "milestone.funded")
        assert {"milestone_id", "project_id", "amount", "status"} <= set(funded_event["data"])
        assert funded_event["channel"] == f"project.{project['id']}"
        last_seen = max(m["id"] for m in seen if "id" in m)

    # Offline: the contractor submits, the homeowner inspects and approves.
    assert contractor.post(f"/api/v1/milestones/{milestone_id}/submit").json()["status"] == (
        "submitted"
    )
    homeowner.post(f"/api/v1/milestones/{milestone_id}/request-inspection")
    approved = homeowner.post(f"/api/v1/milestones/{milestone_id}/approve")
    assert approved.json()["status"] == "released"

    with connect(ws_url, open_timeout=10) as ws:
        ws.send(
            json.dumps(
                {
                    "type": "subscribe",
                    "channels": [f"project.{project['id']}"],
                    "last_event_id": last_seen,
                }
            )
        )
        replayed = []
        while not any(m.get("type") == "milestone.released" for m in replayed):
            replayed.append(json.loads(ws.recv(timeout=10)))
        ids = [m["id"] for m in replayed if "id" in m]
        assert ids == sorted(ids) and len(ids) == len(set(ids)) and min(ids) > last_seen
        statuses = [
            m["data"]["new_status"] for m in replayed if m["type"] == "milestone.status_updated"
        ]
        assert statuses == ["submitted", "inspection", "approved", "released"]

    balances = _wait_for(lambda: contractor.get("/api/v1/balances").json().get("usd"))
    assert balances["escrow_held"] == 0
    assert balances["payable"] + balances["paid_out"] == 95_000
    events = homeowner.get("/api/v1/events?after=0").json()
    assert events["results"] and {"id", "type", "channels", "data", "timestamp"} <= set(
        events["results"][0]
    )
    timeline = homeowner.get(f"/api/v1/payments/{payment['id']}/timeline").json()
    timeline = timeline["results"] if isinstance(timeline, dict) else timeline
    assert [e["id"] for e in timeline] == sorted(e["id"] for e in timeline)
    assert "ledger ok" in _manage(server["env"], "check_ledger")


def test_refund_before_submission_and_others_get_404(server):
    homeowner, _ = _user(server, "e2e-home2", "homeowner")
    _user(server, "e2e-pro2", "contractor")
    stranger, _ = _user(server, "e2e-stranger", "homeowner")
    project = homeowner.post(
        "/api/v1/projects",
        json={
            "title": "Fence",
            "contractor": "e2e-pro2",
            "currency": "jpy",
            "milestones": [{"title": "Posts", "amount": 50_000}],
        },
    ).json()
    milestone_id = project["milestones"][0]["id"]

    assert stranger.get(f"/api/v1/projects/{project['id']}").status_code == 404
    assert stranger.get(f"/api/v1/milestones/{milestone_id}").status_code == 404
    assert homeowner.post(f"/api/v1/milestones/{milestone_id}/approve").status_code == 409
    bad = homeowner.post(
        "/api/v1/projects",
        json={"title": "x", "contractor": "e2e-pro2", "currency": "usd",
              "milestones": [{"title": "y", "amount": -5}]},
    )  # fmt: skip
    assert bad.status_code == 400 and set(bad.json()["error"]) >= {"code", "message", "field"}


def _signed(body: bytes, *, secret: str = SANDBOX_SECRET, at: int | None = None) -> dict:
    timestamp = int(time.time()) if at is None else at
    signature = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return {"Stripe-Signature": f"t={timestamp},v1={signature.hexdigest()}"}


def test_incoming_webhook_signature_rules(server):
    body = json.dumps(
        {"id": "evt_e2e_unknown_1", "type": "payment_intent.succeeded", "object": "event",
         "data": {"object": {"id": "pi_nope", "object": "payment_intent"}}}
    ).encode()  # fmt: skip
    url = f"{server['base']}/webhooks/sandbox/"
    headers = {"Content-Type": "application/json"}

    assert httpx.post(url, content=body, headers=headers).status_code == 400
    forged = _signed(body, secret="whsec_wrong")
    assert httpx.post(url, content=body, headers={**headers, **forged}).status_code == 400
    stale = _signed(body, at=int(time.time()) - 310)
    assert httpx.post(url, content=body, headers={**headers, **stale}).status_code == 400
    future = _signed(body, at=int(time.time()) + 310)
    assert httpx.post(url, content=body, headers={**headers, **future}).status_code == 400
    not_json = b"hello"
    assert (
        httpx.post(url, content=not_json, headers={**headers, **_signed(not_json)}).status_code
        == 400
    )
    good = httpx.post(url, content=body, headers={**headers, **_signed(body)})
    again = httpx.post(url, content=body, headers={**headers, **_signed(body)})
    assert 200 <= good.status_code < 300 and 200 <= again.status_code < 300


def test_websocket_refuses_unauthenticated_and_foreign_origins(server):
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus):
        connect(f"ws://127.0.0.1:{server['port']}/ws/", open_timeout=5)
    _, key = _user(server, "e2e-ws", "homeowner")
    with pytest.raises(InvalidStatus):
        connect(
            f"ws://127.0.0.1:{server['port']}/ws/?token={key}",
            origin="https://evil.example",
            open_timeout=5,
        )
    with connect(f"ws://127.0.0.1:{server['port']}/ws/?token={key}", open_timeout=5) as ws:
        ws.send(json.dumps({"type": "ping"}))
        ws.send(
            json.dumps({"type": "subscribe", "channels": ["project.999999", "user.1.payments"]})
        )
        replies = [json.loads(ws.recv(timeout=5)) for _ in range(4)]
    types = [r["type"] for r in replies]
    assert "pong" in types
    forbidden = {r["channel"] for r in replies if r["type"] == "error"}
    assert forbidden >= {"project.999999"}
