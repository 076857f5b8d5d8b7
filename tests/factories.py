"""Factories shared by every test module."""

import factory

from accounts.models import User
from accounts.services import api_key_create


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    role = User.Role.HOMEOWNER
    is_staff = factory.LazyAttribute(lambda user: user.role == User.Role.OPERATOR)
    password = factory.django.Password("correct-horse-battery")


class HomeownerFactory(UserFactory):
    role = User.Role.HOMEOWNER


class ContractorFactory(UserFactory):
    role = User.Role.CONTRACTOR


class HelperFactory(UserFactory):
    role = User.Role.HELPER


class OperatorFactory(UserFactory):
    role = User.Role.OPERATOR


def raw_key_for(user: User) -> str:
    return api_key_create(user=user, name="test")[1]
