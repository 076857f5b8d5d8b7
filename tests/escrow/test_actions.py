"""The action → role table (escrow/actions.py) is the one answer to "who may do what": for
every milestone state and every kind of user, the actions the portal offers are exactly the
ones the services accept, and every refused one is refused with NotAllowed (wrong party) or a
409 (wrong state), changing nothing."""

import pytest

from common.errors import DomainError
from escrow import actions, services
from escrow.models import Milestone
from tests.escrow.factories import MilestoneFactory, fund, submitted
from tests.factories import OperatorFactory

pytestmark = pytest.mark.django_db

Status = Milestone.Status

CALLS = {
    "fund": lambda m, actor: services.milestone_fund_start(milestone_id=m.pk, actor=actor),
    "submit": lambda m, actor: services.milestone_submit(milestone_id=m.pk, actor=actor),
    "request_inspection": lambda m, actor: services.milestone_request_inspection(
        milestone_id=m.pk, actor=actor
    ),
    "approve": lambda m, actor: services.milestone_approve(milestone_id=m.pk, actor=actor),
    "refund": lambda m, actor: services.milestone_refund(milestone_id=m.pk, actor=actor),
    "cancel": lambda m, actor: services.milestone_cancel(milestone_id=m.pk, actor=actor),
}


def _in(status: str) -> Milestone:
    milestone = MilestoneFactory()
    if status == Status.PENDING:
        return milestone
    if status == Status.FUNDED:
        fund(milestone)
    elif status == Status.SUBMITTED:
        submitted(milestone)
    elif status == Status.INSPECTION:
        submitted(milestone)
        services.milestone_request_inspection(
            milestone_id=milestone.pk, actor=milestone.project.homeowner
        )
    elif status == Status.DISPUTED:
        fund(milestone)
        services.milestone_freeze(milestone_id=milestone.pk, reason="test")
    elif status == Status.RELEASED:
        submitted(milestone)
        services.milestone_approve(milestone_id=milestone.pk, actor=milestone.project.homeowner)
    milestone.refresh_from_db()
    assert milestone.status == status
    return milestone


def _accepted(milestone: Milestone, name: str, actor) -> bool:
    """Whether the service moves the milestone when `actor` does `name` (an idempotent repeat
    that changes nothing is no action to offer), and that a refusal left it as it was."""
    before = Milestone.objects.values().get(pk=milestone.pk)
    try:
        CALLS[name](milestone, actor)
    except DomainError:
        assert Milestone.objects.values().get(pk=milestone.pk) == before
        return False
    return Milestone.objects.get(pk=milestone.pk).status != before["status"]


@pytest.mark.parametrize(
    "status",
    [Status.PENDING, Status.FUNDED, Status.SUBMITTED, Status.INSPECTION, Status.DISPUTED],
)
@pytest.mark.parametrize("who", ["homeowner", "contractor", "operator"])
def test_the_offered_actions_are_exactly_the_ones_the_services_accept(status, who):
    operator = OperatorFactory()
    offered, accepted = None, []
    for name in actions.ACTIONS:
        milestone = _in(status)  # a fresh one per action: an accepted action moves it
        project = milestone.project
        actor = {"homeowner": project.homeowner, "contractor": project.contractor}.get(
            who, operator
        )
        if offered is None:
            offered = actions.offered(actor, milestone, project)
        if _accepted(milestone, name, actor):
            accepted.append(name)
    assert offered == accepted


def test_the_table_names_every_action_the_portal_offers():
    from portal.presenters import ACTION_NAMES

    assert {name.replace("_", "-") for name in actions.ACTIONS} == ACTION_NAMES


def test_a_homeowner_refund_after_submission_is_a_conflict_not_a_refusal():
    from common.errors import IllegalTransition

    milestone = _in(Status.SUBMITTED)
    with pytest.raises(IllegalTransition, match="only before submission"):
        services.milestone_refund(milestone_id=milestone.pk, actor=milestone.project.homeowner)


def test_release_and_refund_buttons_name_what_escrow_holds_not_the_milestone_amount():
    from escrow.money import format_amount
    from portal.presenters import milestone_actions

    milestone = _in(Status.SUBMITTED)
    Milestone.objects.filter(pk=milestone.pk).update(partial_refunds=25_000)
    milestone.refresh_from_db()
    labels = {
        action.name: action.label
        for action in milestone_actions(
            milestone=milestone, project=milestone.project, user=milestone.project.homeowner
        )
    }
    assert labels["approve"] == f"Approve and release {format_amount(75_000, 'usd')}"
    assert format_amount(100_000, "usd") not in labels["approve"]
