"""The live client (static/js/live.js) and the pages it updates agree with the server: it
reacts to the event names the server really emits, and the pages name events by their public
id, the one the WebSocket sends. Read without a browser: live.js's rules are parsed."""

import re
from datetime import date, timedelta

import pytest
from django.conf import settings
from django.db import transaction
from django.test import Client, TestCase

from billing.services import payment_due_reminders_send
from escrow.models import Project
from realtime.events import emit
from realtime.models import Event, Notification
from realtime.sequencer import events_sequence_and_publish
from tests.escrow.factories import MilestoneFactory
from tests.factories import OperatorFactory
from tests.payments.helpers import fund

pytestmark = pytest.mark.django_db

LIVE_JS = settings.BASE_DIR / "static" / "js" / "live.js"
NOTIFICATIONS_REGION = settings.BASE_DIR / "templates" / "portal" / "_notifications_live.html"


def notifying_pattern() -> re.Pattern:
    """live.js's NOTIFYING regular expression (the same syntax in Python for what it uses)."""
    source = LIVE_JS.read_text(encoding="utf-8")
    return re.compile(re.search(r"const NOTIFYING = /(.+)/;", source).group(1))


def notifications_region_prefixes() -> list[str]:
    text = NOTIFICATIONS_REGION.read_text(encoding="utf-8")
    return re.search(r'data-refresh-on="([^"]*)"', text).group(1).split()


def browser_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_live_client_reacts_to_the_payment_due_reminder_the_server_emits():
    """billing.payment_due creates a notification, but live.js and the notifications region
    listened for `payment.due`, a name nothing emits: the badge and the list stayed stale
    until a reload. Emitted by the real reminder service here, then matched against both."""
    milestone = MilestoneFactory(due_date=date.today() + timedelta(days=1))
    Project.objects.filter(pk=milestone.project_id).update(status=Project.Status.ACTIVE)

    with TestCase.captureOnCommitCallbacks(execute=True):
        assert payment_due_reminders_send() == 1

    notified = set(Notification.objects.values_list("event__type", flat=True))
    assert notified == {"billing.payment_due"}
    for event_type in notified:
        assert notifying_pattern().match(event_type), event_type
        assert any(event_type.startswith(p) for p in notifications_region_prefixes()), event_type


@pytest.mark.parametrize("event_type", ["circuit_breaker.opened", "circuit_breaker.closed"])
def test_the_live_client_refreshes_an_operators_notifications_on_breaker_alerts(event_type):
    """The breaker notifications (realtime.services.notifications) reach an operator's open
    page: live.js refreshes the unread count and the notifications region for them."""
    assert notifying_pattern().match(event_type)
    assert any(event_type.startswith(p) for p in notifications_region_prefixes())
    assert not notifying_pattern().match("circuit_breaker.half_open")  # it notifies nobody


def test_operators_pages_follow_the_operators_channel_and_no_one_elses_do():
    """Every page of an operator subscribes to ops.circuit_breakers, so a breaker alert
    arrives live wherever they are; a homeowner's pages do not ask for it."""
    milestone = MilestoneFactory()

    operator_page = browser_for(OperatorFactory()).get("/").content.decode()
    homeowner_page = browser_for(milestone.project.homeowner).get("/").content.decode()

    assert re.search(r'data-channels="[^"]*\bops\.circuit_breakers\b', operator_page)
    assert "ops.circuit_breakers" not in homeowner_page


def test_pages_name_events_by_their_public_id_not_the_row_id(settings):
    """data-event-id (the activity feed and the timelines; live.js highlights the entries
    it has not seen) carried the internal row id; the WebSocket and the API name an event
    by its position. An event rolled back first makes the two differ here."""
    settings.PAYMENT_GATEWAY = "sandbox"
    settings.SANDBOX_WEBHOOK_DELIVERY = "outbox"
    milestone = MilestoneFactory(title="Rough-in", amount=250_000)
    project = milestone.project
    # Row ids and positions come from two sequences whose distance depends on the tests run
    # before; events rolled back consume row ids only, so that the two differ here.
    for _ in range(3):
        try:
            with transaction.atomic():
                emit("probe.rolled_back", {}, aggregate=("probe", 1), audience=[], channels=[])
                raise RuntimeError
        except RuntimeError:
            pass
    payment = fund(milestone)
    events_sequence_and_publish()  # what the commit's callback does first
    events = list(Event.objects.filter(position__isnull=False))
    assert events and any(event.pk != event.position for event in events)

    dashboard = browser_for(project.homeowner).get("/").content.decode()
    project_page = browser_for(project.homeowner).get(f"/projects/{project.pk}/").content
    payment_page = browser_for(project.homeowner).get(f"/payments/{payment.pk}/").content

    public = {str(event.position) for event in events}
    for html in (dashboard, project_page.decode(), payment_page.decode()):
        shown = set(re.findall(r'data-event-id="(\d+)"', html))
        assert shown and shown <= public
