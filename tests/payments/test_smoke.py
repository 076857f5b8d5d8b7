import pytest

from escrow.models import JournalEntry, Milestone
from payments.gateways import sandbox
from payments.models import Payment
from tests.payments.helpers import fund

pytestmark = pytest.mark.django_db(transaction=True)


def test_visa_funds_the_milestone_and_posts_the_ledger_once(milestone):
    payment = fund(milestone)

    assert payment.status == Payment.Status.COMPLETED
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.FUNDED
    assert JournalEntry.objects.filter(reference=f"fund:{payment.pk}").count() == 1
    sandbox.flush()
    assert JournalEntry.objects.filter(reference=f"fund:{payment.pk}").count() == 1
