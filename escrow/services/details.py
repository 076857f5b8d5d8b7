"""Operators' edits of a project's or milestone's descriptive fields (title, due date).

These never touch a status or an amount: the row is locked (project → milestone, the
documented order) and only the changed columns are written, so a status a service changed
meanwhile is never overwritten by a form read before it (a full-row `save()` would)."""

from __future__ import annotations

from datetime import date

from django.db import transaction

from accounts.models import User
from escrow.exceptions import InvalidProject, NotAllowed
from escrow.locks import milestone_for_update, project_for_update
from escrow.models import Milestone, Project
from escrow.services._events import emit_milestone, emit_project

UNSET = object()
TITLE_MAX_LENGTH = 200


def _clean_title(title, *, field: str) -> str:
    if not isinstance(title, str) or not title.strip():
        raise InvalidProject("A title must not be empty.", field=field)
    title = title.strip()
    if len(title) > TITLE_MAX_LENGTH:
        raise InvalidProject(f"A title has at most {TITLE_MAX_LENGTH} characters.", field=field)
    return title


def _check_operator(actor: User) -> None:
    if not actor.is_staff:
        raise NotAllowed("Only operators edit a project's details.")


def _save_changed(row, changes: dict) -> list[str]:
    """Set and save (with `updated_at`) the fields of `changes` that differ from the locked
    `row`; the names saved, sorted (none: nothing written)."""
    changed = sorted(name for name, value in changes.items() if getattr(row, name) != value)
    for name in changed:
        setattr(row, name, changes[name])
    if changed:
        row.save(update_fields=[*changed, "updated_at"])
    return changed


def project_update_details(*, project_id: int, actor: User, title=UNSET) -> Project:
    """Change a project's title. Caller: an operator (the admin's change form).

    Locks the project and saves only the title. Unchanged input changes nothing and emits
    nothing. Raises ProjectNotFound, NotAllowed (not an operator) and InvalidProject (an
    empty or over-long title). Emits project.details_updated with the changed fields."""
    _check_operator(actor)
    changes = {}
    if title is not UNSET:
        changes["title"] = _clean_title(title, field="title")
    with transaction.atomic(durable=True):
        project = project_for_update(project_id=project_id, actor=actor)
        changed = _save_changed(project, changes)
        if changed:
            emit_project("project.details_updated", project, changed=changed, actor_id=actor.pk)
    return project


def milestone_update_details(
    *, milestone_id: int, actor: User, title=UNSET, due_date=UNSET
) -> Milestone:
    """Change a milestone's title or due date. Caller: an operator (the admin's change form).

    Locks project → milestone and saves only the changed columns (never status or amount).
    Unchanged input changes nothing and emits nothing. Raises MilestoneNotFound, NotAllowed
    (not an operator) and InvalidProject (an empty title, a due date that is not a date).
    Emits milestone.details_updated with the changed fields."""
    _check_operator(actor)
    changes = {}
    if title is not UNSET:
        changes["title"] = _clean_title(title, field="title")
    if due_date is not UNSET:
        if due_date is not None and not isinstance(due_date, date):
            raise InvalidProject("due_date must be a date.", field="due_date")
        changes["due_date"] = due_date
    with transaction.atomic(durable=True):
        milestone = milestone_for_update(milestone_id=milestone_id, actor=actor)
        changed = _save_changed(milestone, changes)
        if changed:
            emit_milestone(
                "milestone.details_updated", milestone, changed=changed, actor_id=actor.pk
            )
    return milestone
