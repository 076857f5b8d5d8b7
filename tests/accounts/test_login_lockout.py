"""The login lockout (django-axes) counts failures per username and client address, with the
username normalised exactly as authentication normalises it, on the portal and the admin
login alike; API keys are not affected."""

from datetime import timedelta

import pytest
from django.test import Client

from tests.factories import HomeownerFactory, OperatorFactory

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"
LIMIT = 10

# What the login form turns into "hanna" before authenticating: surrounding whitespace of any
# kind is stripped, then Unicode NFKC (full-width letters, compatibility forms) is applied.
VARIANTS_OF_HANNA = [
    " hanna",
    "hanna ",
    "  hanna  ",
    "\thanna",
    "hanna\t",
    "\nhanna\r\n",
    "\u00a0hanna",  # no-break space
    "\u3000hanna",  # ideographic space
    "ｈａｎｎａ",  # full-width letters, NFKC → hanna
    " ｈａｎｎａ\t",
]


def _fail(client, username, times=LIMIT, path="/accounts/login/"):
    for _ in range(times):
        client.post(path, {"username": username, "password": "wrong"})


def _is_logged_in(client) -> bool:
    return client.get("/").status_code == 200


@pytest.mark.parametrize("variant", VARIANTS_OF_HANNA)
def test_a_padded_or_unnormalised_username_does_not_get_fresh_attempts(variant):
    """Given the limit of failures for `hanna`, the same name written another way that logs in
    as `hanna` (the bypass: the old limiter keyed on the raw POSTed name) is refused too."""
    HomeownerFactory(username="hanna")
    client = Client()
    _fail(client, "hanna")

    response = client.post("/accounts/login/", {"username": variant, "password": PASSWORD})

    assert response.status_code == 429
    assert not _is_logged_in(client)


@pytest.mark.parametrize("variant", VARIANTS_OF_HANNA)
def test_failures_under_a_variant_count_against_the_normalised_name(variant):
    """Given the limit of failures spent under a padded spelling, plain `hanna` is locked."""
    HomeownerFactory(username="hanna")
    client = Client()
    _fail(client, variant)

    response = client.post("/accounts/login/", {"username": "hanna", "password": PASSWORD})

    assert response.status_code == 429
    assert not _is_logged_in(client)


def test_each_variant_logs_in_as_the_same_user_when_not_locked():
    """The variants above are really the same login (so they must share one counter)."""
    user = HomeownerFactory(username="hanna")

    for variant in VARIANTS_OF_HANNA:
        client = Client()
        response = client.post("/accounts/login/", {"username": variant, "password": PASSWORD})
        assert response.status_code == 302, repr(variant)
        assert client.session["_auth_user_id"] == str(user.pk)


def test_usernames_are_case_sensitive_so_a_case_variant_is_no_way_in():
    """Usernames match exactly here (no case folding in the model or the backend): `HANNA`
    with hanna's password does not log in as hanna, so it needs no shared counter."""
    HomeownerFactory(username="hanna")
    client = Client()
    _fail(client, "hanna")

    response = client.post("/accounts/login/", {"username": "HANNA", "password": PASSWORD})

    assert response.status_code == 200
    assert not _is_logged_in(client)


def test_the_lock_is_per_client_address():
    """Another client address is not locked out by this one's failures."""
    HomeownerFactory(username="hanna")
    _fail(Client(REMOTE_ADDR="203.0.113.7"), "hanna")
    other = Client(REMOTE_ADDR="198.51.100.2")

    response = other.post("/accounts/login/", {"username": "hanna", "password": PASSWORD})

    assert response.status_code == 302


def test_a_forwarded_for_header_does_not_change_the_client_address():
    """The client address is REMOTE_ADDR; a spoofed X-Forwarded-For buys no fresh attempts."""
    HomeownerFactory(username="hanna")
    client = Client(REMOTE_ADDR="203.0.113.7")
    _fail(client, "hanna")

    response = client.post(
        "/accounts/login/",
        {"username": "hanna", "password": PASSWORD},
        HTTP_X_FORWARDED_FOR="198.51.100.99",
    )

    assert response.status_code == 429
    assert not _is_logged_in(client)


def test_the_admin_login_is_locked_too():
    """The admin login shares the lockout: failures there lock it, with padding or not."""
    OperatorFactory(username="ops")
    client = Client()
    _fail(client, " ops", path="/admin/login/")

    response = client.post("/admin/login/", {"username": "ops", "password": PASSWORD})

    assert response.status_code == 429
    assert client.get("/admin/").status_code == 302


def test_failures_on_the_portal_lock_the_admin_login():
    """One counter per (username, address), whichever login form the failures came through."""
    OperatorFactory(username="ops")
    client = Client()
    _fail(client, "ops\t")

    response = client.post("/admin/login/", {"username": "ops", "password": PASSWORD})

    assert response.status_code == 429
    assert client.get("/admin/").status_code == 302


def test_the_lockout_page_is_in_the_site_layout_and_says_what_to_do():
    HomeownerFactory(username="hanna")
    client = Client()
    _fail(client, "hanna")

    response = client.post("/accounts/login/", {"username": "hanna", "password": PASSWORD})
    html = response.content.decode()

    assert response.status_code == 429
    assert "Too many failed login attempts" in html
    assert "5 minutes" in html
    assert '<link rel="stylesheet"' in html  # base.html


def test_below_the_limit_the_right_password_logs_in_and_clears_the_failures():
    """Nine failures, a success, nine more failures: still allowed (success resets)."""
    HomeownerFactory(username="hanna")
    client = Client()
    _fail(client, " hanna", times=LIMIT - 1)
    assert (
        client.post("/accounts/login/", {"username": "hanna", "password": PASSWORD}).status_code
        == 302
    )
    client.post("/accounts/logout/")
    _fail(client, "hanna", times=LIMIT - 1)

    response = client.post("/accounts/login/", {"username": "hanna", "password": PASSWORD})

    assert response.status_code == 302


def test_api_keys_keep_working_for_a_locked_out_user(homeowner):
    """API-key authentication does not go through the login lockout."""
    client = Client()
    _fail(client, homeowner.user.username)
    assert (
        client.post(
            "/accounts/login/", {"username": homeowner.user.username, "password": PASSWORD}
        ).status_code
        == 429
    )

    response = homeowner.get("/api/v1/me")

    assert response.status_code == 200


def test_the_lockout_holds_under_asgi_as_daphne_serves_it():
    """The same through the ASGI handler (AxesMiddleware's async path)."""
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    HomeownerFactory(username="hanna")
    client = AsyncClient()
    for _ in range(LIMIT):
        async_to_sync(client.post)("/accounts/login/", {"username": "hanna", "password": "no"})

    response = async_to_sync(client.post)(
        "/accounts/login/", {"username": "\thanna ", "password": PASSWORD}
    )

    assert response.status_code == 429
    assert "Too many failed login attempts" in response.content.decode()


def test_the_lock_lifts_once_the_cool_off_has_passed_since_the_last_failure(settings):
    """Not a permanent lock: with the last failure older than the cool-off, hanna logs in."""
    from axes.models import AccessAttempt
    from django.utils import timezone

    HomeownerFactory(username="hanna")
    client = Client()
    _fail(client, "hanna")
    AccessAttempt.objects.update(
        attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    )

    response = client.post("/accounts/login/", {"username": "hanna", "password": PASSWORD})

    assert response.status_code == 302
