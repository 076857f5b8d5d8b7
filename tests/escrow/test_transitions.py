"""The milestone transition table: every allowed move is made, every other one is refused
with an error naming the current state, and a refused move changes nothing."""

import itertools

import pytest
from django.db import transaction

from common.errors import IllegalTransition
from escrow.models import Milestone
from escrow.services import transition
from realtime.models import Event
from tests.escrow.factories import MilestoneFactory

pytestmark = pytest.mark.django_db

Status = Milestone.Status
ALLOWED = [(a, b) for a, targets in Milestone.TRANSITIONS.items() for b in targets]
FORBIDDEN = [
    (a, b)
    for a, b in itertools.product(Status.values, Status.values)
    if b not in Milestone.TRANSITIONS[a] and a != b
]


def test_the_table_is_the_architectures_state_machine():
    assert set(ALLOWED) == {
        ("pending", "funding"),
        ("pending", "cancelled"),
        ("funding", "funded"),
        ("funding", "pending"),
        ("funded", "submitted"),
        ("funded", "disputed"),
        ("funded", "refunded"),
        ("submitted", "inspection"),
        ("submitted", "approved"),
        ("submitted", "disputed"),
        ("submitted", "refunded"),
        ("inspection", "approved"),
        ("inspection", "disputed"),
        ("approved", "released"),
        ("disputed", "released"),
        ("disputed", "refunded"),
        ("disputed", "split"),
        # Lifting a freeze (milestone_unfreeze) goes back to the status before it.
        ("disputed", "funded"),
        ("disputed", "submitted"),
        ("disputed", "inspection"),
    }


@pytest.mark.parametrize(("current", "target"), ALLOWED)
def test_every_allowed_transition_is_made_and_emits_status_updated(current, target):
    milestone = MilestoneFactory(status=current)

    with transaction.atomic():
        previous = transition(
            milestone, to=target, actor=None, leaving_dispute=current == Status.DISPUTED
        )

    assert previous == current
    assert Milestone.objects.get(pk=milestone.pk).status == target
    event = Event.objects.get(type="milestone.status_updated")
    assert event.data["previous_status"] == current and event.data["new_status"] == target


@pytest.mark.parametrize(("current", "target"), FORBIDDEN)
def test_every_forbidden_transition_is_refused_and_changes_nothing(current, target):
    milestone = MilestoneFactory(status=current)

    with pytest.raises(IllegalTransition) as error, transaction.atomic():
        transition(milestone, to=target, actor=None)

    assert current in error.value.message
    assert Milestone.objects.get(pk=milestone.pk).status == current
    assert not Event.objects.exists()


@pytest.mark.parametrize("target", sorted(Milestone.TRANSITIONS[Status.DISPUTED]))
def test_a_frozen_milestone_is_left_only_by_settling_its_dispute_or_unfreezing(target):
    """Regression (issue 14): the table allows disputed → refunded, and an operator's refund
    took that way out of a freeze. Only milestone_settle_dispute and milestone_unfreeze
    (which pass leaving_dispute) may leave `disputed`."""
    milestone = MilestoneFactory(status=Status.DISPUTED)

    with pytest.raises(IllegalTransition, match="frozen") as error, transaction.atomic():
        transition(milestone, to=target, actor=None)

    assert "disputed" in error.value.message
    assert Milestone.objects.get(pk=milestone.pk).status == Status.DISPUTED
    assert not Event.objects.exists()


def test_the_database_refuses_an_unknown_status():
    from django.db import IntegrityError

    milestone = MilestoneFactory()

    with pytest.raises(IntegrityError), transaction.atomic():
        Milestone.objects.filter(pk=milestone.pk).update(status="teleported")
