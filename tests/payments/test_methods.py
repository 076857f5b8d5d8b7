"""Payment methods: tokens and display data only, one default, status events, expiry."""

from datetime import date

import pytest

from payments import services
from payments.models import PaymentMethod
from realtime.models import Event

pytestmark = pytest.mark.django_db(transaction=True)


def test_only_token_and_display_data_are_stored(homeowner):
    method = services.payment_method_create(user=homeowner.user, token="pm_card_visa")

    stored = PaymentMethod.objects.filter(pk=method.pk).values().get()
    assert stored["token"] == "pm_card_visa"
    assert (stored["brand"], stored["last4"]) == ("visa", "4242")
    assert not any("4242424242424242" in str(value) for value in stored.values())


def test_creating_emits_status_changed_to_the_owner_only(homeowner):
    method = services.payment_method_create(user=homeowner.user, token="pm_card_visa")

    event = Event.objects.get(type="payment_method.status_changed")
    assert event.data["payment_method_id"] == method.pk
    assert event.data["status"] == "verified"
    assert event.audience == [homeowner.user.pk]
    assert event.channels == [f"user.{homeowner.user.pk}.payment_methods"]


def test_the_first_method_is_the_default_and_the_default_can_move(homeowner):
    first = services.payment_method_create(user=homeowner.user, token="pm_card_visa")
    second = services.payment_method_create(user=homeowner.user, token="pm_card_mastercard")
    assert first.is_default and not second.is_default

    response = homeowner.post(f"/api/v1/payment-methods/{second.pk}/default")

    assert response.status_code == 200
    first.refresh_from_db()
    second.refresh_from_db()
    assert second.is_default and not first.is_default


def test_list_shows_own_methods_only(homeowner, stranger):
    services.payment_method_create(user=homeowner.user, token="pm_card_visa")
    services.payment_method_create(user=stranger.user, token="pm_card_visa")

    body = homeowner.get("/api/v1/payment-methods").json()

    assert len(body["results"]) == 1


def test_removing_someone_elses_method_is_404_and_changes_nothing(homeowner, stranger):
    method = services.payment_method_create(user=homeowner.user, token="pm_card_visa")

    assert stranger.delete(f"/api/v1/payment-methods/{method.pk}").status_code == 404
    method.refresh_from_db()
    assert method.status == "verified"


def test_a_removed_method_cannot_fund(homeowner, milestone):
    method = services.payment_method_create(user=homeowner.user, token="pm_card_visa")
    assert homeowner.delete(f"/api/v1/payment-methods/{method.pk}").status_code == 204

    response = homeowner.post(
        f"/api/v1/milestones/{milestone.pk}/fund", {"payment_method": method.pk}, format="json"
    )

    assert response.status_code == 400
    assert not milestone.payments.exists()


def test_expiry_warns_once_then_expires(homeowner):
    method = services.payment_method_create(user=homeowner.user, token="pm_card_visa")
    PaymentMethod.objects.filter(pk=method.pk).update(exp_month=1, exp_year=2030)

    first = services.payment_methods_expiry_check(today=date(2030, 1, 10))
    again = services.payment_methods_expiry_check(today=date(2030, 1, 11))
    after = services.payment_methods_expiry_check(today=date(2030, 2, 1))

    assert first == {"expired": 0, "warned": 1}
    assert again == {"expired": 0, "warned": 0}
    assert after == {"expired": 1, "warned": 0}
    method.refresh_from_db()
    assert method.status == "expired"
    assert Event.objects.filter(type="payment_method.expiring").count() == 1
    assert Event.objects.filter(
        type="payment_method.status_changed", data__status="expired"
    ).exists()
