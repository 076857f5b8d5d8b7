"""Who may see a payment: payer, payee and operators; nobody else."""

import pytest

from payments.selectors import payment_is_visible_to
from tests.payments.helpers import fund

pytestmark = pytest.mark.django_db(transaction=True)


def test_payment_is_visible_to_its_parties_and_operators(
    homeowner, contractor, operator, stranger, milestone
):
    payment = fund(milestone)

    assert payment_is_visible_to(user=homeowner.user, payment_id=payment.pk)
    assert payment_is_visible_to(user=contractor.user, payment_id=payment.pk)
    assert payment_is_visible_to(user=operator.user, payment_id=payment.pk)
    assert not payment_is_visible_to(user=stranger.user, payment_id=payment.pk)


@pytest.mark.parametrize("payment_id", [999_999, "abc", None])
def test_unknown_or_malformed_ids_are_not_visible(operator, payment_id):
    assert not payment_is_visible_to(user=operator.user, payment_id=payment_id)


def test_the_payment_channel_is_authorized_with_it(homeowner, stranger, milestone):
    from realtime import selectors as realtime_selectors

    payment = fund(milestone)
    check = realtime_selectors.channel_is_visible_to
    assert check(user=homeowner.user, channel=f"payment.{payment.pk}")
    assert not check(user=stranger.user, channel=f"payment.{payment.pk}")
