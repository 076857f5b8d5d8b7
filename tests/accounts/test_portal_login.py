"""Portal login and logout at the contract's paths, and the rate limit on failures."""

import pytest

from tests.factories import HomeownerFactory

pytestmark = pytest.mark.django_db


def test_anonymous_dashboard_redirects_to_login(client):
    response = client.get("/")

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_login_form_has_username_and_password(client):
    html = client.get("/accounts/login/").content.decode()

    assert 'name="username"' in html and 'name="password"' in html
    assert "csrfmiddlewaretoken" in html


def test_login_then_dashboard_then_logout(client):
    user = HomeownerFactory(username="hanna")

    response = client.post(
        "/accounts/login/", {"username": "hanna", "password": "correct-horse-battery"}
    )
    assert response.status_code == 302 and response["Location"] == "/"
    assert "hanna" in client.get("/").content.decode()

    client.post("/accounts/logout/")
    assert client.get("/").status_code == 302
    assert user.pk


def test_wrong_password_shows_an_error(client):
    HomeownerFactory(username="hanna")

    response = client.post("/accounts/login/", {"username": "hanna", "password": "wrong"})

    assert response.status_code == 200
    assert "enter a correct username and password" in response.content.decode()


def test_repeated_failures_are_rate_limited_even_with_the_right_password(client):
    HomeownerFactory(username="hanna")
    for _ in range(10):
        client.post("/accounts/login/", {"username": "hanna", "password": "wrong"})

    response = client.post(
        "/accounts/login/", {"username": "hanna", "password": "correct-horse-battery"}
    )

    assert response.status_code == 429
    assert client.get("/").status_code == 302


def test_pages_carry_a_strict_content_security_policy(client):
    policy = client.get("/accounts/login/")["Content-Security-Policy"]

    assert "script-src 'self'" in policy and "unsafe-inline" not in policy


def test_with_stripe_keys_the_policy_allows_exactly_what_stripe_js_needs(client, settings):
    from django.http import HttpResponse

    from common.middleware import ContentSecurityPolicyMiddleware

    settings.PAYMENT_GATEWAY = "stripe"
    settings.STRIPE_PUBLISHABLE_KEY = "pk_test_123"
    middleware = ContentSecurityPolicyMiddleware(lambda request: HttpResponse())

    policy = middleware(client.get("/accounts/login/").wsgi_request)["Content-Security-Policy"]

    assert "script-src 'self' https://js.stripe.com" in policy
    assert "connect-src 'self' https://api.stripe.com" in policy
    assert "frame-src https://js.stripe.com https://hooks.stripe.com" in policy
    assert "unsafe-inline" not in policy


def test_a_publishable_key_without_the_stripe_gateway_keeps_stripe_js_out(client, settings):
    """Stripe.js is loaded only with PAYMENT_GATEWAY=stripe, so only then may the policy
    allow js.stripe.com; a key left in the environment of a sandbox setup changes nothing."""
    from django.http import HttpResponse

    from common.middleware import ContentSecurityPolicyMiddleware

    settings.PAYMENT_GATEWAY = "sandbox"
    settings.STRIPE_PUBLISHABLE_KEY = "pk_test_123"
    middleware = ContentSecurityPolicyMiddleware(lambda request: HttpResponse())

    policy = middleware(client.get("/accounts/login/").wsgi_request)["Content-Security-Policy"]

    assert "stripe.com" not in policy
