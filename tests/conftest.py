"""Fixtures every test module can use: users of each role with API keys, and an API client
per user that sends `Authorization: Bearer <key>`."""

import os

import pytest
from django.conf import settings as django_settings
from rest_framework.test import APIClient

from tests.factories import (
    ContractorFactory,
    HelperFactory,
    HomeownerFactory,
    OperatorFactory,
    UserFactory,
    raw_key_for,
)

POSTGRES = django_settings.IS_POSTGRES
REDIS = bool(django_settings.REDIS_URL)

requires_postgres = pytest.mark.skipif(
    not POSTGRES and not os.environ.get("CI"),
    reason="needs PostgreSQL (DATABASE_URL); CI runs it",
)


def pytest_collection_modifyitems(config, items):
    # A test marked `postgres` that runs without PostgreSQL in CI is an error, not a skip.
    if os.environ.get("CI") and not POSTGRES:
        for item in items:
            if item.get_closest_marker("postgres"):
                item.add_marker(pytest.mark.xfail(strict=True, reason="CI must set DATABASE_URL"))


@pytest.fixture(autouse=True)
def _test_settings(settings):
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    settings.CELERY_TASK_ALWAYS_EAGER = True
    # Password hashing dominates factory time; tests do not need a slow hash.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # The sandbox gateway's webhooks and timers wait for an explicit flush in tests (no
    # background threads): payments.gateways.sandbox.flush().
    settings.SANDBOX_WEBHOOK_DELIVERY = "outbox"
    # A simulated card holder passes the sandbox's 3-D Secure at the next flush; the tests of
    # the challenge itself set "challenge" (the default everywhere else).
    settings.SANDBOX_AUTHENTICATION = "auto"
    settings.PAYMENTS_RETRY_TIMERS = False
    # pytest-django delivers mail into Django's local-memory outbox, which tests read: for
    # them that is delivery (production mode without EMAIL_URL is tested on its own).
    settings.EMAIL_DELIVERY_CONFIGURED = True


@pytest.fixture(autouse=True)
def _clear_cache():
    from django.core.cache import cache

    cache.clear()
    yield


class Party:
    """A user, their raw API key and an authenticated API client."""

    def __init__(self, user):
        self.user = user
        self.key = raw_key_for(user)
        self.client = APIClient()
        self.client.credentials(HTTP_AUTHORIZATION=f"Bearer {self.key}")

    def __getattr__(self, name):
        return getattr(self.client, name)


@pytest.fixture
def homeowner(db):
    return Party(HomeownerFactory())


@pytest.fixture
def contractor(db):
    return Party(ContractorFactory())


@pytest.fixture
def helper(db):
    return Party(HelperFactory())


@pytest.fixture
def operator(db):
    return Party(OperatorFactory())


@pytest.fixture
def stranger(db):
    """A homeowner with nothing to do with the objects under test."""
    return Party(UserFactory(role="homeowner"))


@pytest.fixture
def anonymous():
    return APIClient()
