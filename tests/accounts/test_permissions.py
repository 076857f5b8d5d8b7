"""Operators' permissions are an explicit set (view everything, change only what a service
writes); only a superuser changes a role, and is_staff follows the role, in the service and in
the database."""

import pytest
from django.apps import apps
from django.db import IntegrityError, transaction
from django.test import Client

from accounts.exceptions import RoleChangeNotAllowed
from accounts.models import User
from accounts.services import user_create, user_set_role
from tests.factories import HomeownerFactory, OperatorFactory

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"


def _superuser() -> User:
    return User.objects.create_superuser("root", "root@example.com", PASSWORD)


def _client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _change_form_data(user: User, **overrides) -> dict:
    """What the admin's user change form posts for `user`, with some fields overridden."""
    data = {
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "is_active": "on",
        "role": user.role,
        "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
        "last_login_0": "",
        "last_login_1": "",
        "initial-date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
        "initial-date_joined_1": user.date_joined.strftime("%H:%M:%S"),
    }
    data.update(overrides)
    return data


def _access(user: User) -> tuple:
    user.refresh_from_db()
    return (user.role, user.is_staff, user.is_superuser, user.user_permissions.count())


@pytest.mark.parametrize(
    "perm",
    [
        "accounts.change_user",
        "accounts.add_user",
        "accounts.delete_user",
        "auth.change_group",
        "auth.add_group",
        "auth.change_permission",
        "escrow.change_journalentry",
        "escrow.add_posting",
        "escrow.change_ledgeraccount",
        "escrow.delete_milestone",
        "payments.change_payment",
        "payments.delete_payoutaccount",
        "accounts.change_apikey",
        "axes.delete_accessattempt",
    ],
)
def test_an_operator_cannot_edit_users_roles_permissions_or_the_ledger(perm):
    """The old backend answered True to every permission an operator was asked about."""
    operator = OperatorFactory()

    assert operator.has_perm(perm) is False


def test_an_operator_can_view_every_model_and_write_only_service_backed_forms():
    operator = OperatorFactory()

    for model in apps.get_models():
        assert operator.has_perm(f"{model._meta.app_label}.view_{model._meta.model_name}")
    assert operator.has_perm("payments.change_payoutaccount")
    assert operator.has_perm("payments.add_payoutaccount")
    assert operator.has_perm("escrow.change_milestone")
    assert operator.has_perm("realtime.change_webhookendpoint")
    assert operator.has_module_perms("payments") and operator.has_module_perms("accounts")


def test_only_active_operators_get_operator_permissions():
    homeowner = HomeownerFactory()
    inactive = OperatorFactory(is_active=False)

    assert not homeowner.has_perm("payments.view_payment")
    assert not inactive.has_perm("payments.view_payment")
    assert not homeowner.has_module_perms("payments")


def test_posting_superuser_and_staff_flags_to_the_admin_changes_nothing():
    """An operator who posts is_superuser=on (and is_staff, user_permissions) for themselves
    to the user change view is refused, and their row is as it was."""
    operator = OperatorFactory()
    before = _access(operator)
    client = _client_for(operator)

    response = client.post(
        f"/admin/accounts/user/{operator.pk}/change/",
        _change_form_data(
            operator, is_superuser="on", is_staff="on", user_permissions=["1", "2", "3"]
        ),
    )

    assert response.status_code == 403
    assert _access(operator) == before
    assert operator.is_superuser is False


def test_an_operator_cannot_make_someone_an_operator_in_the_admin():
    operator = OperatorFactory()
    homeowner = HomeownerFactory()
    before = _access(homeowner)

    response = _client_for(operator).post(
        f"/admin/accounts/user/{homeowner.pk}/change/",
        _change_form_data(homeowner, role="operator", is_staff="on"),
    )

    assert response.status_code == 403
    assert _access(homeowner) == before


def test_an_operator_sees_the_user_form_without_role_staff_or_superuser_fields():
    operator = OperatorFactory()
    homeowner = HomeownerFactory()

    response = _client_for(operator).get(f"/admin/accounts/user/{homeowner.pk}/change/")
    html = response.content.decode()

    assert response.status_code == 200
    for field in ("role", "is_staff", "is_superuser", "groups", "user_permissions"):
        assert f'name="{field}"' not in html


def test_an_operator_cannot_add_a_user_or_set_a_password():
    operator = OperatorFactory()
    homeowner = HomeownerFactory()
    client = _client_for(operator)
    users_before = User.objects.count()

    add = client.post(
        "/admin/accounts/user/add/",
        {
            "username": "sneaky",
            "usable_password": "true",
            "password1": "a-long-new-password-1",
            "password2": "a-long-new-password-1",
            "role": "operator",
        },
    )
    password = client.post(
        f"/admin/accounts/user/{homeowner.pk}/password/",
        {"password1": "a-long-new-password-1", "password2": "a-long-new-password-1"},
    )

    assert add.status_code == 403 and password.status_code == 403
    assert User.objects.count() == users_before
    homeowner.refresh_from_db()
    assert homeowner.check_password(PASSWORD)


def test_a_superuser_changes_a_role_in_the_admin_and_is_staff_follows():
    root = _superuser()
    user = HomeownerFactory()
    client = _client_for(root)

    promoted = client.post(
        f"/admin/accounts/user/{user.pk}/change/", _change_form_data(user, role="operator")
    )
    user.refresh_from_db()
    assert promoted.status_code == 302, promoted.content.decode()[:2000]
    assert (user.role, user.is_staff) == ("operator", True)

    demoted = client.post(
        f"/admin/accounts/user/{user.pk}/change/", _change_form_data(user, role="contractor")
    )
    user.refresh_from_db()
    assert demoted.status_code == 302
    assert (user.role, user.is_staff) == ("contractor", False)


def test_the_admin_form_has_no_staff_or_superuser_field_even_for_a_superuser():
    """is_staff follows the role; superuser status is granted with createsuperuser."""
    root = _superuser()
    user = HomeownerFactory()

    response = _client_for(root).post(
        f"/admin/accounts/user/{user.pk}/change/",
        _change_form_data(user, is_staff="on", is_superuser="on"),
    )

    assert response.status_code == 302
    user.refresh_from_db()
    assert (user.is_staff, user.is_superuser) == (False, False)


def test_a_superuser_adds_an_operator_in_the_admin_and_it_is_staff():
    root = _superuser()

    response = _client_for(root).post(
        "/admin/accounts/user/add/",
        {
            "username": "newops",
            "usable_password": "true",
            "password1": "a-long-new-password-1",
            "password2": "a-long-new-password-1",
            "role": "operator",
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    user = User.objects.get(username="newops")
    assert (user.role, user.is_staff, user.is_superuser) == ("operator", True, False)
    assert user.check_password("a-long-new-password-1")


def test_an_operator_cannot_change_a_role_through_the_service():
    operator = OperatorFactory()
    homeowner = HomeownerFactory()

    with pytest.raises(RoleChangeNotAllowed):
        user_set_role(user_id=homeowner.pk, role="operator", actor=operator)
    with pytest.raises(RoleChangeNotAllowed):
        user_set_role(user_id=operator.pk, role="homeowner", actor=operator)

    assert _access(homeowner) == ("homeowner", False, False, 0)
    assert _access(operator) == ("operator", True, False, 0)


def test_user_set_role_moves_is_staff_with_the_role_and_is_idempotent():
    root = _superuser()
    user = HomeownerFactory()

    user_set_role(user_id=user.pk, role="operator", actor=root)
    again = user_set_role(user_id=user.pk, role="operator", actor=root)

    assert (again.role, again.is_staff) == ("operator", True)
    assert _access(user)[:2] == ("operator", True)
    user_set_role(user_id=user.pk, role="helper", actor=root)
    assert _access(user)[:2] == ("helper", False)


@pytest.mark.parametrize(
    ("factory", "drift"),
    [
        (HomeownerFactory, {"is_staff": True}),
        (OperatorFactory, {"is_staff": False}),
        (HomeownerFactory, {"role": "operator"}),
        (OperatorFactory, {"role": "contractor"}),
    ],
)
def test_the_database_refuses_a_staff_flag_that_does_not_follow_the_role(factory, drift):
    user = factory()
    before = _access(user)

    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.filter(pk=user.pk).update(**drift)

    assert _access(user) == before


def test_a_superuser_is_staff_whatever_the_role():
    root = _superuser()

    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.filter(pk=root.pk).update(is_staff=False)

    assert _access(root)[1:3] == (True, True)


def test_user_create_stores_the_username_the_login_form_sends():
    """`create_user " ｂｏｂ\\t"` creates `bob`, who logs in as `bob`."""
    user = user_create(username=" ｂｏｂ\t", role="operator", password=PASSWORD)

    assert (user.username, user.is_staff) == ("bob", True)
    response = Client().post("/accounts/login/", {"username": "bob", "password": PASSWORD})
    assert response.status_code == 302


def test_an_operator_opens_every_admin_list_with_the_explicit_permissions():
    """View everything: each registered model's list renders for an operator."""
    from django.contrib import admin
    from django.urls import reverse

    client = _client_for(OperatorFactory())

    for model in admin.site._registry:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        assert client.get(url).status_code == 200, url


def test_an_operator_still_runs_a_service_backed_action_with_view_permission(contractor):
    """Actions call services and need only the view permission: revoking a key works."""
    from accounts.models import ApiKey

    api_key = ApiKey.objects.get(user=contractor.user)

    response = _client_for(OperatorFactory()).post(
        "/admin/accounts/apikey/", {"action": "revoke", "_selected_action": [api_key.pk]}
    )

    assert response.status_code == 302
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    assert contractor.get("/api/v1/me").status_code == 401
