"""API keys: only a hash is stored, Bearer auth works until revoked, errors use the contract."""

import pytest
from django.core.management import call_command

from accounts.models import ApiKey, User
from accounts.services import api_key_create, api_key_revoke
from tests.factories import HomeownerFactory, OperatorFactory

pytestmark = pytest.mark.django_db


def test_me_returns_the_caller(homeowner):
    response = homeowner.get("/api/v1/me")

    assert response.status_code == 200
    assert response.json() == {
        "id": homeowner.user.pk,
        "username": homeowner.user.username,
        "role": "homeowner",
        "email": homeowner.user.email,
    }


def test_only_the_hash_and_prefix_of_a_key_are_stored():
    user = HomeownerFactory()

    api_key, raw_key = api_key_create(user=user)

    stored = ApiKey.objects.get(pk=api_key.pk)
    assert raw_key.startswith(f"esk_{stored.prefix}_")
    assert stored.key_hash == ApiKey.hash(raw_key)
    assert raw_key not in {stored.key_hash, stored.prefix, stored.name}


def test_a_user_can_hold_several_keys_and_each_works(anonymous):
    user = HomeownerFactory()
    keys = [api_key_create(user=user)[1] for _ in range(3)]

    for key in keys:
        anonymous.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        assert anonymous.get("/api/v1/me").json()["id"] == user.pk


def test_use_records_last_used(homeowner):
    homeowner.get("/api/v1/me")

    assert ApiKey.objects.get(user=homeowner.user).last_used_at is not None


def test_a_revoked_key_is_refused(homeowner):
    api_key = ApiKey.objects.get(user=homeowner.user)

    api_key_revoke(api_key_id=api_key.pk, actor=homeowner.user)
    response = homeowner.get("/api/v1/me")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"
    assert ApiKey.objects.get(pk=api_key.pk).revoked_at is not None


def test_revoking_twice_keeps_the_first_time(homeowner):
    api_key = ApiKey.objects.get(user=homeowner.user)
    first = api_key_revoke(api_key_id=api_key.pk, actor=homeowner.user).revoked_at

    second = api_key_revoke(api_key_id=api_key.pk, actor=homeowner.user).revoked_at

    assert first == second


def test_a_user_cannot_revoke_someone_elses_key(homeowner, contractor):
    from accounts.exceptions import ApiKeyNotFound

    api_key = ApiKey.objects.get(user=contractor.user)

    with pytest.raises(ApiKeyNotFound):
        api_key_revoke(api_key_id=api_key.pk, actor=homeowner.user)
    assert ApiKey.objects.get(pk=api_key.pk).revoked_at is None


def test_an_operator_can_revoke_any_key(contractor):
    api_key = ApiKey.objects.get(user=contractor.user)

    api_key_revoke(api_key_id=api_key.pk, actor=OperatorFactory())

    assert contractor.get("/api/v1/me").status_code == 401


@pytest.mark.parametrize(
    "header",
    ["Bearer esk_nope_nope", "Bearer ", "Bearer " + "x" * 500],
)
def test_unknown_keys_are_401_with_the_error_body(anonymous, header):
    anonymous.credentials(HTTP_AUTHORIZATION=header)

    response = anonymous.get("/api/v1/me")

    assert response.status_code == 401
    assert set(response.json()["error"]) >= {"code", "message", "field"}


def test_no_credentials_is_401(anonymous):
    response = anonymous.get("/api/v1/me")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_inactive_users_keys_stop_working(homeowner):
    User.objects.filter(pk=homeowner.user.pk).update(is_active=False)

    assert homeowner.get("/api/v1/me").status_code == 401


def test_create_user_command_creates_each_role():
    for role in User.Role.values:
        call_command("create_user", f"cmd-{role}", "--role", role, "--password", "pw-123456789")

    operator = User.objects.get(username="cmd-operator")
    assert operator.is_staff and operator.check_password("pw-123456789")
    assert User.objects.get(username="cmd-homeowner").is_staff is False


def test_create_api_key_prints_the_key_alone_on_the_last_line(capsys, anonymous):
    call_command("create_user", "keyed", "--role", "contractor")

    call_command("create_api_key", "keyed")
    raw_key = capsys.readouterr().out.strip().splitlines()[-1]

    anonymous.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    assert anonymous.get("/api/v1/me").json()["username"] == "keyed"


def test_create_user_refuses_a_taken_username():
    from django.core.management.base import CommandError

    call_command("create_user", "taken", "--role", "homeowner")

    with pytest.raises(CommandError):
        call_command("create_user", "taken", "--role", "contractor")
    assert User.objects.get(username="taken").role == "homeowner"
