"""The WebSocket Origin rule (realtime.auth) through a real Daphne and real WebSocket
connections: only the site's own origins, compared by scheme, host and port, may open /ws/
(the origin the server is served on plus TRUSTED_ORIGINS); a session cookie must come with
one; token clients may send none. And the same list is Django's CSRF_TRUSTED_ORIGINS."""

import asyncio
import json
import subprocess

import pytest
from django.test import Client
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.factories import HomeownerFactory
from tests.realtime.servers import PYTHON, ROOT, Daphne, migrated_sqlite, server_env, serverctl

TRUSTED = "https://partner.example:8443"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("daphne-origin")
    env = server_env(migrated_sqlite(directory), TRUSTED_ORIGINS=TRUSTED)
    daphne = Daphne(env, directory / "daphne.log").start()
    yield daphne
    daphne.stop()


@pytest.fixture(scope="module")
def homeowner(server):
    """A homeowner with an API key and a signed-in portal session on the server."""
    user = serverctl(server.env, "setup")["homeowner"]
    user["cookie"] = "sessionid=" + serverctl(server.env, "session", user=user["id"])["sessionid"]
    return user


async def refused(server, *, path="/ws/", headers) -> int:
    with pytest.raises(InvalidStatus) as refusal:
        async with connect(server.ws_url.removesuffix("/ws/") + path, additional_headers=headers):
            pass
    return refusal.value.response.status_code


async def receives_its_payment_events(server, user, *, path="/ws/", headers) -> bool:
    """Connect, then emit an event on the user's payments channel: True when it arrives."""
    url = server.ws_url.removesuffix("/ws/") + path
    async with connect(url, additional_headers=headers, open_timeout=10) as websocket:
        await websocket.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(websocket.recv(), 10)) == {"type": "pong"}
        ids = serverctl(
            server.env,
            "emit",
            count=1,
            channels=[f"user.{user['id']}.payments"],
            audience=[user["id"]],
        )["ids"]
        while True:
            message = json.loads(await asyncio.wait_for(websocket.recv(), 10))
            if "id" in message:
                return message["id"] == ids[0]


@pytest.mark.asyncio
async def test_a_page_on_another_port_of_the_same_host_is_refused(server, homeowner):
    """The reported hole: a page on http://127.0.0.1:<other port> rode the user's session
    cookie into /ws/ because only host names were compared. Refused now, with a token too."""
    foreign = f"http://127.0.0.1:{server.port + 1}"

    cookie = {"Cookie": homeowner["cookie"], "Origin": foreign}
    assert await refused(server, headers=cookie) == 403
    token = {"Origin": foreign}
    assert await refused(server, path=f"/ws/?token={homeowner['key']}", headers=token) == 403
    assert (
        await refused(server, headers={"Cookie": homeowner["cookie"], "Origin": "http://127.0.0.1"})
        == 403
    )


@pytest.mark.asyncio
async def test_the_same_host_and_port_under_another_scheme_is_refused(server, homeowner):
    """https://127.0.0.1:<port> is another origin than http://127.0.0.1:<port>."""
    headers = {"Cookie": homeowner["cookie"], "Origin": f"https://127.0.0.1:{server.port}"}

    assert await refused(server, headers=headers) == 403


@pytest.mark.asyncio
async def test_the_sites_own_origin_with_the_session_cookie_gets_the_users_events(
    server, homeowner
):
    """The portal's own page (same scheme, host and port as the server) is accepted and
    receives the user's events."""
    headers = {"Cookie": homeowner["cookie"], "Origin": f"http://127.0.0.1:{server.port}"}

    assert await receives_its_payment_events(server, homeowner, headers=headers)


@pytest.mark.asyncio
async def test_an_origin_listed_in_trusted_origins_is_accepted(server, homeowner):
    """TRUSTED_ORIGINS adds origins exactly as written: the listed one is accepted, the same
    host on another port is not."""
    headers = {"Cookie": homeowner["cookie"], "Origin": TRUSTED}

    assert await receives_its_payment_events(server, homeowner, headers=headers)
    other_port = {"Cookie": homeowner["cookie"], "Origin": "https://partner.example"}
    assert await refused(server, headers=other_port) == 403


@pytest.mark.asyncio
async def test_a_session_cookie_without_an_origin_is_refused(server, homeowner):
    """Browsers always send Origin; a cookie without one is not a page of this site."""
    assert await refused(server, headers={"Cookie": homeowner["cookie"]}) == 403


@pytest.mark.asyncio
async def test_a_token_client_without_an_origin_is_accepted(server, homeowner):
    """Integrations (no browser, no cookie) authenticate with ?token= and send no Origin."""
    path = f"/ws/?token={homeowner['key']}"

    assert await receives_its_payment_events(server, homeowner, path=path, headers={})


def test_site_url_and_trusted_origins_make_one_list_that_csrf_uses_too():
    """SITE_URL contributes its origin (scheme, host, port; path dropped) and TRUSTED_ORIGINS
    its entries; CSRF_TRUSTED_ORIGINS is that same list, so forms and sockets agree."""
    code = (
        "import json; from django.conf import settings; "
        "print(json.dumps([settings.TRUSTED_ORIGINS, settings.CSRF_TRUSTED_ORIGINS]))"
    )
    env = server_env(
        ":memory:", SITE_URL="https://pay.example:8443/portal/", TRUSTED_ORIGINS=TRUSTED
    )
    result = subprocess.run(
        [PYTHON, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    trusted, csrf = json.loads(result.stdout.strip().splitlines()[-1])
    assert trusted == ["https://pay.example:8443", TRUSTED]
    assert csrf == trusted


@pytest.mark.django_db
def test_a_form_post_from_another_port_of_the_same_host_fails_the_csrf_check():
    """Django's CSRF check reads the same list, which no longer trusts every allowed host on
    the default ports: a POST from http://127.0.0.1 (port 80) or another port to the site on
    127.0.0.1:8000 is refused, one from the site's own origin is not (all with a valid CSRF
    token)."""
    HomeownerFactory(username="csrf-user", password="correct-horse-9")

    def login(origin: str) -> int:
        client = Client(enforce_csrf_checks=True, HTTP_HOST="127.0.0.1:8000")
        client.get("/accounts/login/")
        token = client.cookies["csrftoken"].value
        response = client.post(
            "/accounts/login/",
            {"username": "csrf-user", "password": "correct-horse-9", "csrfmiddlewaretoken": token},
            HTTP_ORIGIN=origin,
        )
        return response.status_code

    assert login("http://127.0.0.1") == 403
    assert login("http://127.0.0.1:8001") == 403
    assert login("http://127.0.0.1:8000") == 302
