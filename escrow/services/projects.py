"""Writes to projects: create, sign, cancel, and completion once every milestone settled."""

from datetime import date

from django.db import transaction
from django.utils import timezone

from accounts.models import User
from common import transitions
from escrow import money
from escrow.exceptions import IllegalTransition, InvalidProject, NotAllowed
from escrow.locks import project_for_update
from escrow.models import Milestone, Project
from escrow.services._events import emit_project

MAX_MILESTONES = 50


def project_create(
    *,
    homeowner: User,
    title: str,
    contractor_username: str,
    currency: str,
    milestones: list[dict],
) -> Project:
    """Create a draft project with its milestones (title, amount, optional due_date).

    Caller: a homeowner. Raises InvalidProject (field named) for an unknown or unsuitable
    contractor, an unsupported currency, or bad milestones; nothing is written then.
    Not idempotent by itself: the API's Idempotency-Key makes retries safe.
    """
    if homeowner.role != User.Role.HOMEOWNER:
        raise NotAllowed("Only homeowners create projects.")
    if not money.is_supported_currency(currency):
        raise InvalidProject(
            f"Unsupported currency {currency!r}; use a lowercase ISO 4217 code like 'usd'.",
            field="currency",
        )
    contractor = User.objects.filter(
        username=contractor_username, role=User.Role.CONTRACTOR, is_active=True
    ).first()
    if contractor is None:
        raise InvalidProject(f"No contractor named {contractor_username!r}.", field="contractor")
    if not 1 <= len(milestones) <= MAX_MILESTONES:
        raise InvalidProject(f"A project has 1 to {MAX_MILESTONES} milestones.", field="milestones")
    for index, item in enumerate(milestones):
        amount = item.get("amount")
        if type(amount) is not int or not 0 < amount <= money.MAX_AMOUNT:
            raise InvalidProject(
                f"Amount must be a whole number of minor units from 1 to {money.MAX_AMOUNT}.",
                field=f"milestones[{index}].amount",
            )
        if not str(item.get("title", "")).strip():
            raise InvalidProject("A milestone needs a title.", field=f"milestones[{index}].title")
        due = item.get("due_date")
        if due is not None and not isinstance(due, date):
            raise InvalidProject("due_date must be a date.", field=f"milestones[{index}].due_date")

    with transaction.atomic(durable=True):
        project = Project.objects.create(
            homeowner=homeowner,
            contractor=contractor,
            title=title.strip(),
            currency=currency,
        )
        Milestone.objects.bulk_create(
            [
                Milestone(
                    project=project,
                    title=item["title"].strip(),
                    amount=item["amount"],
                    due_date=item.get("due_date"),
                    position=index,
                )
                for index, item in enumerate(milestones)
            ]
        )
        emit_project("project.created", project)
    return project


def project_sign(*, project_id: int, actor: User) -> Project:
    """Sign the contract as its homeowner or contractor; both signatures make it active.

    Idempotent: signing again returns the project unchanged. Raises ProjectNotFound (also for
    projects the actor may not see), NotAllowed (an operator is not a party) and
    IllegalTransition (a cancelled or completed project). Emits contract.signed once both signed.
    """
    with transaction.atomic(durable=True):
        project = project_for_update(project_id=project_id, actor=actor)
        if actor.pk not in project.party_ids():
            raise NotAllowed("Only the homeowner and the contractor sign the contract.")
        field = (
            "homeowner_signed_at" if actor.pk == project.homeowner_id else "contractor_signed_at"
        )
        if getattr(project, field) is not None:
            return project
        if project.status != Project.Status.DRAFT:
            raise IllegalTransition(
                obj_name=f"Project {project.pk}", current=project.status, target="signed"
            )
        setattr(project, field, timezone.now())
        if project.homeowner_signed_at and project.contractor_signed_at:
            transitions.transition(project, to=Project.Status.ACTIVE, also=[field])
        else:
            project.save(update_fields=[field, "updated_at"])
        emit_project("project.signed", project, signed_by=actor.pk, role=actor.role)
        if project.status == Project.Status.ACTIVE:
            emit_project(
                "contract.signed",
                project,
                homeowner_signed_at=project.homeowner_signed_at.isoformat(),
                contractor_signed_at=project.contractor_signed_at.isoformat(),
            )
    return project


def project_cancel(*, project_id: int, actor: User) -> Project:
    """Cancel a project whose milestones hold no money (all pending or settled).

    Caller: the homeowner or an operator. Pending milestones become cancelled. Idempotent.
    Raises ProjectNotFound, NotAllowed, IllegalTransition (completed, or money held/in flight).
    """
    with transaction.atomic(durable=True):
        project = project_for_update(project_id=project_id, actor=actor)
        if not (actor.is_staff or actor.pk == project.homeowner_id):
            raise NotAllowed("Only the homeowner or an operator cancels a project.")
        if project.status == Project.Status.CANCELLED:
            return project
        milestones = list(project.milestones.select_for_update(of=("self",)).order_by("pk"))
        busy = [m for m in milestones if m.status not in Milestone.TERMINAL | {"pending"}]
        if project.status == Project.Status.COMPLETED or busy:
            raise IllegalTransition(
                obj_name=f"Project {project.pk}",
                current=project.status if not busy else f"{project.status} with money held",
                target="cancelled",
            )
        from escrow.services.milestones import transition

        for milestone in milestones:
            if milestone.status == Milestone.Status.PENDING:
                milestone.project = project
                transition(milestone, to=Milestone.Status.CANCELLED, actor=actor)
        # The locked row's status (draft or active) is the previous one.
        previous = transitions.transition(project, to=Project.Status.CANCELLED)
        emit_project("project.status_updated", project, previous_status=previous)
    return project


def complete_if_settled(project: Project) -> None:
    """Mark an active project completed once every milestone is settled. Caller holds the
    project's lock."""
    if project.status != Project.Status.ACTIVE:
        return
    if project.milestones.exclude(status__in=Milestone.TERMINAL).exists():
        return
    transitions.transition(project, to=Project.Status.COMPLETED)
    emit_project("project.status_updated", project, previous_status="active")
