"""A demo project for `make run`: created once, signed by both parties, ready to fund."""

from escrow import services
from escrow.models import Project


def load_demo_project(*, homeowner, contractor) -> bool:
    if Project.objects.filter(homeowner=homeowner, contractor=contractor).exists():
        return False
    project = services.project_create(
        homeowner=homeowner,
        title="Kitchen remodel",
        contractor_username=contractor.username,
        currency="usd",
        milestones=[
            {"title": "Demolition and rough-in", "amount": 250_000},
            {"title": "Cabinets and countertops", "amount": 480_000},
            {"title": "Finishing and inspection", "amount": 175_050},
        ],
    )
    services.project_sign(project_id=project.pk, actor=homeowner)
    services.project_sign(project_id=project.pk, actor=contractor)
    services.project_create(
        homeowner=homeowner,
        title="Deck repair (draft, not signed yet)",
        contractor_username=contractor.username,
        currency="eur",
        milestones=[{"title": "Replace boards", "amount": 90_000}],
    )
    return True
