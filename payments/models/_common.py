"""Shared helpers for the payments models."""

from django.db import models
from django.db.models import Q


def status_check(name: str, values) -> models.CheckConstraint:
    return models.CheckConstraint(condition=Q(status__in=list(values)), name=name)
