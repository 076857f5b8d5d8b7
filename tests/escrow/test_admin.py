"""The escrow admin's change forms write through project_update_details and
milestone_update_details: the row locked, only the changed columns saved, so a status a
service changed while the form was open is never written back."""

from datetime import date
from unittest import mock

import pytest
from django.contrib.admin import ModelAdmin
from django.test import Client

from escrow.models import Milestone, Project
from realtime.models import Event
from tests.escrow.factories import MilestoneFactory, ProjectFactory
from tests.factories import OperatorFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def admin_client():
    client = Client()
    client.force_login(OperatorFactory())
    return client


def changed_meanwhile(model, **values):
    """Patch the admin's get_object so that, right after the form's object is read, another
    transaction (a service) commits these values: the form's copy is stale from then on."""
    original = ModelAdmin.get_object

    def get_object(self, request, object_id, from_field=None):
        obj = original(self, request, object_id, from_field)
        if obj is not None and isinstance(obj, model) and request.method == "POST":
            model.objects.filter(pk=obj.pk).update(**values)
        return obj

    return mock.patch.object(ModelAdmin, "get_object", get_object)


def milestone_form(milestone, **values):
    data = {
        "title": milestone.title,
        "due_date": milestone.due_date.isoformat() if milestone.due_date else "",
    }
    return {**data, **values}


def test_a_milestone_title_edit_does_not_overwrite_a_status_changed_meanwhile(admin_client):
    milestone = MilestoneFactory(status="funded")

    with changed_meanwhile(Milestone, status="submitted"):
        response = admin_client.post(
            f"/admin/escrow/milestone/{milestone.pk}/change/",
            milestone_form(milestone, title="Tiling, corrected"),
        )

    assert response.status_code == 302, response.content.decode()[:3000]
    milestone.refresh_from_db()
    assert (milestone.title, milestone.status) == ("Tiling, corrected", "submitted")
    event = Event.objects.get(type="milestone.details_updated")
    assert event.data["changed"] == ["title"]
    assert event.data["milestone_id"] == milestone.pk


def test_a_milestone_due_date_is_changed_through_the_service(admin_client):
    milestone = MilestoneFactory()

    response = admin_client.post(
        f"/admin/escrow/milestone/{milestone.pk}/change/",
        milestone_form(milestone, due_date="2027-03-01"),
    )

    assert response.status_code == 302
    milestone.refresh_from_db()
    assert milestone.due_date == date(2027, 3, 1)
    assert Event.objects.get(type="milestone.details_updated").data["changed"] == ["due_date"]


def test_saving_an_unchanged_milestone_form_writes_nothing(admin_client):
    milestone = MilestoneFactory(status="funded")

    with changed_meanwhile(Milestone, status="submitted"):
        response = admin_client.post(
            f"/admin/escrow/milestone/{milestone.pk}/change/", milestone_form(milestone)
        )

    assert response.status_code == 302
    milestone.refresh_from_db()
    assert milestone.status == "submitted"
    assert not Event.objects.filter(type="milestone.details_updated").exists()


def test_a_project_title_edit_does_not_overwrite_a_cancellation_made_meanwhile(admin_client):
    project = ProjectFactory()

    with changed_meanwhile(Project, status="cancelled"):
        response = admin_client.post(
            f"/admin/escrow/project/{project.pk}/change/",
            {
                "title": "Kitchen, phase 2",
                "milestones-TOTAL_FORMS": "0",
                "milestones-INITIAL_FORMS": "0",
            },
        )

    assert response.status_code == 302, response.content.decode()[:3000]
    project.refresh_from_db()
    assert (project.title, project.status) == ("Kitchen, phase 2", "cancelled")
    assert Event.objects.get(type="project.details_updated").data["changed"] == ["title"]


def test_the_admin_cannot_delete_projects_or_milestones(admin_client):
    milestone = MilestoneFactory()

    for url in [
        f"/admin/escrow/project/{milestone.project_id}/delete/",
        f"/admin/escrow/milestone/{milestone.pk}/delete/",
    ]:
        assert admin_client.post(url, {"post": "yes"}).status_code == 403, url

    assert Milestone.objects.filter(pk=milestone.pk).exists()
