"""The escrow REST endpoints as the contract states them: shapes, who may call what (others
get 404), bad input rejected with the error body and nothing changed, and a whole journey
through the API alone."""

import pytest

from escrow import invariants
from escrow.models import JournalEntry, Milestone, Project
from realtime.models import Event
from tests.escrow.factories import MilestoneFactory, ProjectFactory, fund

pytestmark = pytest.mark.django_db


def project_body(contractor_party, **overrides):
    body = {
        "title": "Roof",
        "contractor": contractor_party.user.username,
        "currency": "usd",
        "milestones": [{"title": "Tear-off", "amount": 120_000, "due_date": "2027-01-15"}],
    }
    body.update(overrides)
    return body


def test_create_project_returns_the_contract_shape(homeowner, contractor):
    response = homeowner.post("/api/v1/projects", project_body(contractor))

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "draft"
    assert body["homeowner"] == homeowner.user.username
    assert body["contractor"] == contractor.user.username
    assert body["currency"] == "usd" and body["escrow_balance"] == 0
    [milestone] = body["milestones"]
    assert {k: milestone[k] for k in ("title", "amount", "status")} == {
        "title": "Tear-off",
        "amount": 120_000,
        "status": "pending",
    }
    assert isinstance(milestone["id"], int)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"milestones": [{"title": "x", "amount": -1}]}, "milestones[0].amount"),
        ({"milestones": [{"title": "x", "amount": 0}]}, "milestones[0].amount"),
        ({"milestones": [{"title": "x", "amount": 10.5}]}, "milestones[0].amount"),
        ({"milestones": [{"title": "x", "amount": 100.0}]}, "milestones[0].amount"),
        ({"milestones": [{"title": "x", "amount": "100"}]}, "milestones[0].amount"),
        ({"milestones": [{"title": "x", "amount": True}]}, "milestones[0].amount"),
        ({"milestones": [{"title": "x", "amount": 10**20}]}, "milestones[0].amount"),
        ({"milestones": [{"title": "x", "amount": None}]}, "milestones[0].amount"),
        ({"milestones": [{"title": "", "amount": 5}]}, "milestones[0].title"),
        ({"milestones": []}, "milestones"),
        ({"milestones": "lots"}, "milestones"),
        ({"currency": "xyz"}, "currency"),
        ({"currency": "USD"}, "currency"),
        ({"currency": 840}, "currency"),
        ({"contractor": "nobody"}, "contractor"),
        ({"title": ""}, "title"),
        ({"title": "x" * 201}, "title"),
    ],
)
def test_bad_project_input_is_400_naming_the_field_and_nothing_is_written(
    homeowner, contractor, change, field
):
    response = homeowner.post("/api/v1/projects", project_body(contractor, **change))

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == field and error["message"]
    assert not Project.objects.exists() and not Milestone.objects.exists()
    assert not Event.objects.exists()


def test_the_contractor_must_be_a_contractor(homeowner, stranger):
    response = homeowner.post("/api/v1/projects", project_body(stranger))

    assert response.status_code == 400 and response.json()["error"]["field"] == "contractor"


def test_only_homeowners_create_projects(contractor):
    response = contractor.post("/api/v1/projects", project_body(contractor))

    assert response.status_code == 403
    assert not Project.objects.exists()


def test_parties_and_operators_see_a_project_others_get_404(
    homeowner, contractor, operator, stranger
):
    project_id = homeowner.post("/api/v1/projects", project_body(contractor)).json()["id"]
    milestone_id = Milestone.objects.get().pk

    for party in (homeowner, contractor, operator):
        assert party.get(f"/api/v1/projects/{project_id}").status_code == 200
        assert party.get(f"/api/v1/milestones/{milestone_id}").status_code == 200
    assert stranger.get(f"/api/v1/projects/{project_id}").status_code == 404
    assert stranger.get(f"/api/v1/milestones/{milestone_id}").status_code == 404
    assert stranger.post(f"/api/v1/projects/{project_id}/sign").status_code == 404
    assert stranger.get(f"/api/v1/projects/{project_id}").json()["error"]["code"] == "not_found"
    assert stranger.get("/api/v1/projects").json()["results"] == []


def test_sign_activates_once_both_parties_signed(homeowner, contractor):
    project_id = homeowner.post("/api/v1/projects", project_body(contractor)).json()["id"]

    first = homeowner.post(f"/api/v1/projects/{project_id}/sign")
    second = contractor.post(f"/api/v1/projects/{project_id}/sign")

    assert first.status_code == 200 and first.json()["status"] == "draft"
    assert second.json()["status"] == "active"


def _milestone(homeowner, contractor, amount=120_000):
    project = ProjectFactory(homeowner=homeowner.user, contractor=contractor.user)
    return MilestoneFactory(project=project, amount=amount)


def test_the_journey_through_the_api(homeowner, contractor, settings):
    settings.PLATFORM_FEE_PERCENT = "5"
    milestone = _milestone(homeowner, contractor)
    fund(milestone)  # the funding call's test double; the payments suite covers the real one
    url = f"/api/v1/milestones/{milestone.pk}"

    assert homeowner.get(url).json()["escrow_balance"] == 120_000
    assert contractor.post(f"{url}/submit").json()["status"] == "submitted"
    assert homeowner.post(f"{url}/request-inspection").json()["status"] == "inspection"
    approved = homeowner.post(f"{url}/approve")

    assert approved.status_code == 200
    assert approved.json()["status"] == "released" and approved.json()["escrow_balance"] == 0
    balances = contractor.get("/api/v1/balances").json()
    assert balances == {"usd": {"escrow_held": 0, "pending": 0, "payable": 114_000, "paid_out": 0}}
    assert invariants.violations() == []


def test_milestone_shape(homeowner, contractor):
    milestone = _milestone(homeowner, contractor)

    body = homeowner.get(f"/api/v1/milestones/{milestone.pk}").json()

    assert {"id", "project", "title", "amount", "status", "escrow_balance"} <= set(body)
    assert body["project"] == milestone.project_id and body["status"] == "pending"


def test_refund_before_submission(homeowner, contractor):
    milestone = _milestone(homeowner, contractor)
    fund(milestone)

    response = homeowner.post(f"/api/v1/milestones/{milestone.pk}/refund")

    assert response.status_code == 200 and response.json()["status"] == "refunded"


def test_illegal_transitions_are_409_naming_the_state_and_change_nothing(homeowner, contractor):
    milestone = _milestone(homeowner, contractor)
    events_before = Event.objects.count()

    response = homeowner.post(f"/api/v1/milestones/{milestone.pk}/approve")

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "illegal_transition" and "pending" in error["message"]
    assert Milestone.objects.get(pk=milestone.pk).status == "pending"
    assert Event.objects.count() == events_before
    assert not JournalEntry.objects.exists()


def test_the_wrong_party_is_403(homeowner, contractor):
    milestone = _milestone(homeowner, contractor)
    fund(milestone)

    response = homeowner.post(f"/api/v1/milestones/{milestone.pk}/submit")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert Milestone.objects.get(pk=milestone.pk).status == "funded"


def test_repeating_an_approval_with_an_idempotency_key_replays_it(homeowner, contractor):
    milestone = _milestone(homeowner, contractor)
    fund(milestone)
    contractor.post(f"/api/v1/milestones/{milestone.pk}/submit")

    first = homeowner.post(f"/api/v1/milestones/{milestone.pk}/approve", HTTP_IDEMPOTENCY_KEY="a")
    again = homeowner.post(f"/api/v1/milestones/{milestone.pk}/approve", HTTP_IDEMPOTENCY_KEY="a")

    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert JournalEntry.objects.filter(kind="release").count() == 1


def test_utilization_endpoint(homeowner, contractor):
    milestone = _milestone(homeowner, contractor, amount=5_000)
    fund(milestone)

    body = homeowner.get(f"/api/v1/projects/{milestone.project_id}/utilization").json()

    assert body["funded"] == 5_000 and body["held"] == 5_000 and body["remaining"] == 0


def test_project_list_is_paginated(homeowner, contractor):
    for _ in range(3):
        _milestone(homeowner, contractor)

    page = homeowner.get("/api/v1/projects?page_size=2").json()

    assert len(page["results"]) == 2 and page["next"]
    rest = homeowner.get(page["next"]).json()
    assert len(rest["results"]) == 1 and rest["next"] is None
