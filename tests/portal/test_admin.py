"""The operators' admin: the ops site replaces the default one, orders the apps for the job
and shows the attention panel with counts that link to filtered lists."""

import pytest
from django.contrib import admin
from django.test import Client

from portal.admin_site import OpsAdminSite
from tests.escrow.factories import MilestoneFactory
from tests.factories import HomeownerFactory, OperatorFactory

pytestmark = pytest.mark.django_db


def test_default_admin_site_is_the_ops_site():
    assert isinstance(admin.site, OpsAdminSite)


def test_index_shows_attention_panel_and_orders_payments_first():
    MilestoneFactory(status="disputed")
    client = Client()
    client.force_login(OperatorFactory())
    response = client.get("/admin/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "Needs attention" in html
    assert "Milestones in dispute" in html
    assert "/admin/escrow/milestone/?status__exact=disputed" in html
    app_labels = [app["app_label"] for app in response.context["app_list"]]
    assert app_labels.index("payments") < app_labels.index("escrow") < app_labels.index("accounts")


def test_non_staff_cannot_open_the_admin():
    client = Client()
    client.force_login(HomeownerFactory())
    response = client.get("/admin/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
