"""Who may do what to a milestone: the one action → role table.

The services enforce it (`require` raises NotAllowed for the wrong party, `require_from`
IllegalTransition where a party may act only from some states); the portal offers the actions
it allows (`offered`), from the same table and Milestone.TRANSITIONS, so a button is shown
exactly when the service would accept the click.

Roles: "homeowner" and "contractor" are the project's parties; "operator" is a staff user.
A system caller (payments, the beat) passes no actor and is not checked here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from escrow.exceptions import IllegalTransition, NotAllowed
from escrow.models import Milestone, Project

if TYPE_CHECKING:
    from accounts.models import User

Status = Milestone.Status


@dataclass(frozen=True)
class Action:
    to: str  # the status the action moves the milestone to (its first step)
    roles: frozenset[str]
    # Per role, the only statuses it may act from (beyond the table), with the reason in words.
    only_from: dict[str, frozenset[str]] = field(default_factory=dict)
    why: str = ""
    needs_active_project: bool = False


ACTIONS: dict[str, Action] = {
    "fund": Action(Status.FUNDING, frozenset({"homeowner"}), needs_active_project=True),
    "submit": Action(Status.SUBMITTED, frozenset({"contractor"})),
    "request_inspection": Action(Status.INSPECTION, frozenset({"homeowner"})),
    "approve": Action(Status.APPROVED, frozenset({"homeowner"})),
    "refund": Action(
        Status.REFUNDED,
        frozenset({"homeowner", "operator"}),
        only_from={"homeowner": frozenset({Status.FUNDED})},
        why="by the homeowner, only before submission",
    ),
    "cancel": Action(Status.CANCELLED, frozenset({"homeowner", "operator"})),
}


def roles_of(actor: User, project: Project) -> set[str]:
    roles = set()
    if actor.pk == project.homeowner_id:
        roles.add("homeowner")
    if actor.pk == project.contractor_id:
        roles.add("contractor")
    if actor.is_staff:
        roles.add("operator")
    return roles


def require(actor: User | None, milestone: Milestone, name: str) -> None:
    """Refuse `actor` doing `name` to `milestone` unless one of its roles may (NotAllowed,
    403). The move itself is checked by the transition (the table), and a role's own limits
    by `require_from`."""
    if actor is None:
        return  # a system caller; it has no part to check
    action = ACTIONS[name]
    if not roles_of(actor, milestone.project) & action.roles:
        raise NotAllowed(f"Only the project's {' or '.join(sorted(action.roles))} may do this.")


def require_from(actor: User | None, milestone: Milestone, name: str) -> None:
    """Refuse (IllegalTransition, 409) when every role of `actor` that may do `name` may do it
    only from other statuses than the milestone's (the homeowner refunds only before the
    work is submitted; an operator also after)."""
    if actor is None:
        return
    action = ACTIONS[name]
    roles = roles_of(actor, milestone.project) & action.roles
    if roles and all(
        role in action.only_from and milestone.status not in action.only_from[role]
        for role in roles
    ):
        raise IllegalTransition(
            obj_name=f"Milestone {milestone.pk}",
            current=milestone.status,
            target=f"{action.to} ({action.why})",
        )


def offered(actor: User, milestone: Milestone, project: Project) -> list[str]:
    """The actions `actor` may take on `milestone` now, in the table's order: a role allows
    it, the milestone's table allows the move from its status (a frozen milestone allows
    none of these), and the project is active where the action needs it."""
    names = []
    roles = roles_of(actor, project)
    for name, action in ACTIONS.items():
        status = milestone.status
        if status == Status.DISPUTED or action.to not in Milestone.TRANSITIONS[status]:
            continue
        if action.needs_active_project and project.status != Project.Status.ACTIVE:
            continue
        if any(
            role in action.roles and status in action.only_from.get(role, {status})
            for role in roles
        ):
            names.append(name)
    return names
