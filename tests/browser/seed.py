"""Data for the browser tests, created inside the server's own database by
`manage.py shell -c` (the test process never opens that database itself).

Each call prints one JSON line the test reads back."""

import json
from datetime import date

from django.db import transaction

from accounts.models import User
from accounts.services import user_create
from escrow import services

PASSWORD = "browser-test-password-1"


def _user(username: str, role: str) -> User:
    return User.objects.filter(username=username).first() or user_create(
        username=username, role=role, password=PASSWORD, email=f"{username}@example.com"
    )


def active_project(tag: str, *, funded: bool = False) -> None:
    """A homeowner and a contractor (usernames ending in `tag`) with an active project of
    two milestones; with `funded`, the first one is funded the way payments would do it."""
    homeowner = _user(f"home_{tag}", "homeowner")
    contractor = _user(f"pro_{tag}", "contractor")
    project = services.project_create(
        homeowner=homeowner,
        title=f"Bathroom {tag}",
        contractor_username=contractor.username,
        currency="usd",
        milestones=[
            {"title": "Tiling", "amount": 250_000, "due_date": date(2030, 6, 1)},
            {"title": "Fixtures", "amount": 120_000},
        ],
    )
    services.project_sign(project_id=project.pk, actor=homeowner)
    services.project_sign(project_id=project.pk, actor=contractor)
    milestones = list(project.milestones.order_by("position", "id"))
    if funded:
        first = milestones[0]
        with transaction.atomic():
            services.milestone_fund_start(milestone_id=first.pk, actor=homeowner)
        with transaction.atomic():
            services.milestone_funded(
                milestone_id=first.pk,
                amount=first.amount,
                currency="usd",
                reference=f"browser-seed-{first.pk}",
                provider="sandbox",
            )
    print(
        json.dumps(
            {
                "homeowner": homeowner.username,
                "contractor": contractor.username,
                "password": PASSWORD,
                "project_id": project.pk,
                "milestone_ids": [m.pk for m in milestones],
            }
        )
    )


def submit(milestone_id: int) -> None:
    """The contractor submits the milestone (used while the server is down)."""
    from escrow.models import Milestone

    milestone = Milestone.objects.select_related("project__contractor").get(pk=milestone_id)
    services.milestone_submit(milestone_id=milestone_id, actor=milestone.project.contractor)
    print(json.dumps({"status": "submitted"}))


def operator(tag: str) -> None:
    user = _user(f"ops_{tag}", "operator")
    print(json.dumps({"username": user.username, "password": PASSWORD}))


def prune_replay() -> None:
    """Pretend the replay index was pruned up to the newest event: a client resuming from
    before it is told to resync instead of getting a replay."""
    from django.db.models import Max

    from realtime.models import Event, ReplayHorizon

    newest = Event.objects.aggregate(newest=Max("id"))["newest"] or 0
    ReplayHorizon.objects.update_or_create(pk=1, defaults={"pruned_through_id": newest})
    print(json.dumps({"pruned_through_id": newest}))
