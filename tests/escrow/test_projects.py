"""Project services: cancelling says what the project was before."""

import pytest

from escrow import services
from realtime.models import Event
from tests.escrow.factories import DraftProjectFactory, MilestoneFactory, ProjectFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("factory", [DraftProjectFactory, ProjectFactory])
def test_cancelling_a_project_emits_its_real_previous_status(factory):
    project = factory()
    MilestoneFactory(project=project)
    previous = project.status

    services.project_cancel(project_id=project.pk, actor=project.homeowner)

    event = Event.objects.get(type="project.status_updated")
    assert event.data["previous_status"] == previous
    assert event.data["status"] == "cancelled"
