"""Payments fixtures: a clean sandbox gateway (no queued deliveries or faults), a breaker
that opens after a few calls, and parties with an active project."""

import pytest

from payments import breaker
from payments.gateways import sandbox
from tests.conftest import Party
from tests.escrow.factories import MilestoneFactory, ProjectFactory


@pytest.fixture(autouse=True)
def _clean_sandbox(settings):
    settings.PAYMENT_GATEWAY = "sandbox"
    settings.PAYMENTS_BREAKER_BACKEND = "database"
    settings.PAYMENTS_BREAKER_MIN_CALLS = 4
    settings.PAYMENTS_BREAKER_ERROR_RATE = 0.5
    settings.PAYMENTS_BREAKER_COOLDOWN_SECONDS = 30
    settings.PAYMENTS_RETRY_BASE_SECONDS = 2
    sandbox.take_outbox()
    sandbox.clear_faults()
    breaker._stores.clear()
    yield
    sandbox.take_outbox()
    sandbox.clear_faults()


@pytest.fixture
def project(homeowner, contractor):
    return ProjectFactory(homeowner=homeowner.user, contractor=contractor.user)


@pytest.fixture
def milestone(project):
    return MilestoneFactory(project=project, amount=50_000)


@pytest.fixture
def parties(homeowner, contractor, operator):
    return {"homeowner": homeowner, "contractor": contractor, "operator": operator}


def as_party(user) -> Party:
    return Party(user)
