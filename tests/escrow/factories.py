"""Escrow factories and a test double for the funding payment (payments calls the same two
services inside its own transaction)."""

import factory
from django.db import transaction
from django.utils import timezone

from escrow import services
from escrow.models import Milestone, Project
from tests.factories import ContractorFactory, HomeownerFactory


class ProjectFactory(factory.django.DjangoModelFactory):
    """An active project: both parties have signed."""

    class Meta:
        model = Project

    homeowner = factory.SubFactory(HomeownerFactory)
    contractor = factory.SubFactory(ContractorFactory)
    title = factory.Sequence(lambda n: f"Project {n}")
    currency = "usd"
    status = Project.Status.ACTIVE
    homeowner_signed_at = factory.LazyFunction(timezone.now)
    contractor_signed_at = factory.LazyFunction(timezone.now)


class DraftProjectFactory(ProjectFactory):
    status = Project.Status.DRAFT
    homeowner_signed_at = None
    contractor_signed_at = None


class MilestoneFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Milestone

    project = factory.SubFactory(ProjectFactory)
    title = factory.Sequence(lambda n: f"Milestone {n}")
    amount = 100_000
    position = factory.Sequence(int)


def fund(milestone: Milestone, *, reference: str | None = None, provider: str = "sandbox"):
    """Take a pending milestone to funded the way payments does: start, then the payment
    completes and escrow is credited."""
    with transaction.atomic():
        services.milestone_fund_start(milestone_id=milestone.pk, actor=milestone.project.homeowner)
    with transaction.atomic():
        return services.milestone_funded(
            milestone_id=milestone.pk,
            amount=milestone.amount,
            currency=milestone.project.currency,
            reference=reference or f"test-payment-{milestone.pk}",
            provider=provider,
        )


def submitted(milestone: Milestone) -> Milestone:
    fund(milestone)
    return services.milestone_submit(milestone_id=milestone.pk, actor=milestone.project.contractor)
