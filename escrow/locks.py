"""Row locks, always taken in one order: project → milestone (→ payments' rows → ledger
accounts by id, which ledger.post_entry does). `of=("self",)` keeps joins unlocked."""

from django.db.models import Q

from accounts.models import User
from escrow.exceptions import MilestoneNotFound, ProjectNotFound
from escrow.models import Milestone, Project


def _visible(user: User | None) -> Q:
    if user is None or user.is_staff:
        return Q()
    return Q(homeowner=user) | Q(contractor=user)


def project_for_update(*, project_id: int, actor: User | None = None) -> Project:
    """Lock a project the actor may see (actor None: a system caller)."""
    project = (
        Project.objects.select_for_update(of=("self",))
        .filter(_visible(actor), pk=project_id)
        .select_related("homeowner", "contractor")
        .first()
    )
    if project is None:
        raise ProjectNotFound()
    return project


def milestone_for_update(*, milestone_id: int, actor: User | None = None) -> Milestone:
    """Lock the milestone's project, then the milestone (the documented order)."""
    project_id = Milestone.objects.filter(pk=milestone_id).values_list("project_id", flat=True)
    project_id = project_id.first()
    if project_id is None:
        raise MilestoneNotFound()
    try:
        project = project_for_update(project_id=project_id, actor=actor)
    except ProjectNotFound as exc:
        raise MilestoneNotFound() from exc
    milestone = Milestone.objects.select_for_update(of=("self",)).get(pk=milestone_id)
    milestone.project = project
    return milestone


def milestones_for_update(*, milestone_ids, skip_locked: bool = False) -> dict[int, Milestone]:
    """Lock several milestones for a system caller, in the same layered order: every project
    first (ascending id), then every milestone (ascending id). A transaction holding any
    milestone already holds its project, so this cannot deadlock with milestone_for_update.
    Returns the locked milestones by id (missing ids are absent), each with its project.

    `skip_locked`: leave out the milestones of projects another transaction holds instead of
    waiting for it (two workers' batches that share a project do not queue behind each other;
    the caller deals with what was left out)."""
    ids = sorted(set(milestone_ids))
    project_ids = sorted(
        set(Milestone.objects.filter(pk__in=ids).values_list("project_id", flat=True))
    )
    projects = {
        project.pk: project
        for project in Project.objects.select_for_update(of=("self",), skip_locked=skip_locked)
        .filter(pk__in=project_ids)
        .select_related("homeowner", "contractor")
        .order_by("pk")
    }
    milestones = {}
    for milestone in (
        Milestone.objects.select_for_update(of=("self",))
        .filter(pk__in=ids, project_id__in=projects)
        .order_by("pk")
    ):
        milestone.project = projects[milestone.project_id]
        milestones[milestone.pk] = milestone
    return milestones
