"""The events escrow emits, in one place so their data fields stay as the contract says."""

from escrow import ledger
from escrow.models import Milestone, Project
from realtime.events import emit


def project_channels(project: Project) -> list[str]:
    return [
        f"project.{project.pk}",
        f"user.{project.homeowner_id}.milestones",
        f"user.{project.contractor_id}.milestones",
    ]


def milestone_channels(milestone: Milestone) -> list[str]:
    return [f"milestone.{milestone.pk}", *project_channels(milestone.project)]


def milestone_data(milestone: Milestone, **extra) -> dict:
    return {
        "milestone_id": milestone.pk,
        "project_id": milestone.project_id,
        "title": milestone.title,
        "amount": milestone.amount,
        "currency": milestone.project.currency,
        "status": milestone.status,
        **extra,
    }


def emit_milestone(type: str, milestone: Milestone, **extra) -> None:
    emit(
        type,
        milestone_data(milestone, **extra),
        aggregate=("milestone", milestone.pk),
        audience=milestone.project.party_ids(),
        channels=milestone_channels(milestone),
    )


def emit_status_updated(milestone: Milestone, *, previous: str, actor_id: int | None) -> None:
    emit_milestone(
        "milestone.status_updated",
        milestone,
        previous_status=previous,
        new_status=milestone.status,
        actor_id=actor_id,
    )


project_escrow_balance = ledger.project_escrow_balance


def emit_balance_changed(
    milestone: Milestone,
    *,
    previous_project_balance: int,
    reason: str,
    new_project_balance: int | None = None,
    milestone_balance: int | None = None,
):
    """The balances after the change are read from the ledger unless the caller knows them
    (a batch that read them once and added its own entries)."""
    if new_project_balance is None:
        new_project_balance = project_escrow_balance(milestone.project_id)
    if milestone_balance is None:
        milestone_balance = ledger.escrow_balance_of(milestone.pk)
    emit(
        "escrow.balance_changed",
        {
            "project_id": milestone.project_id,
            "milestone_id": milestone.pk,
            "currency": milestone.project.currency,
            "previous_balance": previous_project_balance,
            "new_balance": new_project_balance,
            "milestone_balance": milestone_balance,
            "reason": reason,
        },
        aggregate=("project", milestone.project_id),
        audience=milestone.project.party_ids(),
        channels=milestone_channels(milestone),
    )


def emit_project(type: str, project: Project, **extra) -> None:
    emit(
        type,
        {
            "project_id": project.pk,
            "title": project.title,
            "currency": project.currency,
            "status": project.status,
            **extra,
        },
        aggregate=("project", project.pk),
        audience=project.party_ids(),
        channels=project_channels(project),
    )
