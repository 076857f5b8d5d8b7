"""Notifications in the portal: the list and unread count are the viewer's own; marking read
changes only the viewer's notification; another user's is 404."""

import pytest

from realtime.models import Notification, NotificationPreference
from realtime.services.notifications import notification_create
from tests.factories import HomeownerFactory
from tests.portal.test_views import browser_for, csrf_post

pytestmark = pytest.mark.django_db


def make(user, title="A milestone is ready for review", key="k1"):
    return notification_create(
        user_id=user.pk, kind="milestone_submitted", key=key, title=title, url="/"
    )


def test_list_shows_own_notifications_and_unread_badge():
    user = HomeownerFactory()
    make(user)
    make(HomeownerFactory(), title="Not yours", key="k2")
    client = browser_for(user)
    html = client.get("/notifications/").content.decode()
    assert "A milestone is ready for review" in html
    assert "Not yours" not in html
    assert 'data-notifications-count="1"' in html
    assert client.get("/notifications/unread").json() == {"unread": 1}


def test_mark_read_and_mark_all_read():
    user = HomeownerFactory()
    first, second = make(user, key="a"), make(user, key="b")
    client = browser_for(user)
    csrf_post(client, f"/notifications/{first.pk}/read")
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.read_at is not None and second.read_at is None
    response = csrf_post(client, "/notifications/read-all", follow=True)
    assert "Marked 1 notification read." in response.content.decode()
    assert not Notification.objects.filter(user=user, read_at__isnull=True).exists()


def test_someone_elses_notification_is_404_and_stays_unread():
    notification = make(HomeownerFactory())
    response = csrf_post(browser_for(HomeownerFactory()), f"/notifications/{notification.pk}/read")
    assert response.status_code == 404
    notification.refresh_from_db()
    assert notification.read_at is None


def test_email_preferences_are_saved_through_the_service():
    user = HomeownerFactory()
    client = browser_for(user)
    html = client.get("/notifications/").content.decode()
    assert 'name="email_enabled"' in html and 'value="payment_failed"' in html
    response = csrf_post(
        client,
        "/notifications/preferences",
        {"email_enabled": "on", "email_kinds": ["payment_failed", "funds_released"]},
        follow=True,
    )
    assert "Your e-mail preferences are saved." in response.content.decode()
    preference = NotificationPreference.objects.get(user=user)
    assert preference.email_enabled is True
    assert "payment_failed" not in preference.email_muted_kinds
    assert "milestone_submitted" in preference.email_muted_kinds
