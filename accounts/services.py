"""Every write to users and API keys."""

import logging
import secrets

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts import connections
from accounts.exceptions import (
    ApiKeyNotFound,
    RoleChangeNotAllowed,
    UserChangeNotAllowed,
    UsernameTaken,
    UserNotFound,
)
from accounts.lockout import normalize_login_username
from accounts.models import ApiKey, User

logger = logging.getLogger(__name__)


def user_create(*, username: str, role: str, password: str | None = None, email: str = "") -> User:
    """Create a user with a role. Operators are staff (they use the admin).

    The username is stored as the login form will send it (surrounding whitespace stripped,
    Unicode NFKC), so the user can log in with what was typed here. Raises UsernameTaken.
    Without a password the account cannot log in to the portal (it can still use API keys)."""
    if role not in User.Role.values:
        raise ValueError(f"unknown role {role!r}")
    username = normalize_login_username(username)
    if not username:
        raise ValueError("a username is required")
    try:
        with transaction.atomic():
            user = User(username=username, email=email, role=role)
            user.is_staff = User.staff_status_for(role=role, is_superuser=user.is_superuser)
            if password:
                user.set_password(password)
            else:
                user.set_unusable_password()
            user.save()
    except IntegrityError as exc:
        raise UsernameTaken(f"The username {username!r} is taken.") from exc
    return user


def user_set_role(*, user_id: int, role: str, actor: User) -> User:
    """Give a user another role; is_staff follows (User.staff_status_for), in the same update,
    so the two never drift (the constraint user_staff_follows_role refuses it anyway).

    Caller: a superuser (operators cannot make anyone, themselves included, an operator or
    take it away). Idempotent: the same role returns the user unchanged. Joins the caller's
    transaction (the admin's change form holds one). Raises RoleChangeNotAllowed,
    UserNotFound, ValueError for an unknown role."""
    if not (actor.is_active and actor.is_superuser):
        raise RoleChangeNotAllowed()
    if role not in User.Role.values:
        raise ValueError(f"unknown role {role!r}")
    with transaction.atomic():
        user = User.objects.select_for_update(of=("self",)).filter(pk=user_id).first()
        if user is None:
            raise UserNotFound()
        if user.role == role:
            return user
        previous = user.role
        user.role = role
        user.is_staff = User.staff_status_for(role=role, is_superuser=user.is_superuser)
        user.save(update_fields=["role", "is_staff"])
    logger.info(
        "user role changed",
        extra={"user_id": user.pk, "from_role": previous, "to_role": role, "actor_id": actor.pk},
    )
    return user


def user_password_set(*, user_id: int, password: str | None) -> User:
    """Give a user a new password (already validated by the caller's form), or, with None, an
    unusable one (no password login). Every session signed in with the old password ends:
    Django refuses a session whose password hash no longer matches, and after commit every
    WebSocket a session of this user opened closes (accounts.connections); API keys and their
    connections are unaffected. The caller keeps its own session with
    update_session_auth_hash (Django's password views and the admin do). Raises UserNotFound.
    Joins the caller's transaction."""
    with transaction.atomic():
        user = User.objects.select_for_update(of=("self",)).filter(pk=user_id).first()
        if user is None:
            raise UserNotFound()
        if password is None:
            user.set_unusable_password()
        else:
            user.set_password(password)
        user.save(update_fields=["password"])
        connections.close_for_user(
            user.pk, reason=connections.Reason.PASSWORD_CHANGED, sessions_only=True
        )
    logger.info("user password changed", extra={"user_id": user.pk})
    return user


def user_set_active(*, user_id: int, is_active: bool, actor: User) -> User:
    """Activate or deactivate a user. A deactivated user's sessions and API keys stop working
    at once (Django's backend and accounts.authentication refuse inactive users) and, after
    commit, every WebSocket connection of theirs closes (accounts.connections).

    Caller: a superuser (who alone may change users, accounts.permissions). Idempotent: the
    same state returns the user unchanged. Joins the caller's transaction (the admin's change
    form holds one). Raises UserChangeNotAllowed for anyone else, UserNotFound."""
    if not (actor.is_active and actor.is_superuser):
        raise UserChangeNotAllowed()
    with transaction.atomic():
        user = User.objects.select_for_update(of=("self",)).filter(pk=user_id).first()
        if user is None:
            raise UserNotFound()
        if user.is_active == is_active:
            return user
        user.is_active = is_active
        user.save(update_fields=["is_active"])
        if not is_active:
            connections.close_for_user(
                user.pk, reason=connections.Reason.USER_DEACTIVATED, sessions_only=False
            )
    logger.info(
        "user activated" if is_active else "user deactivated",
        extra={"user_id": user.pk, "actor_id": actor.pk},
    )
    return user


def api_key_create(*, user: User, name: str = "") -> tuple[ApiKey, str]:
    """Create a key and return it with the raw key, which is shown once and never stored."""
    prefix = secrets.token_hex(4)
    raw_key = f"{ApiKey.PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    api_key = ApiKey.objects.create(
        user=user, name=name, prefix=prefix, key_hash=ApiKey.hash(raw_key)
    )
    return api_key, raw_key


def api_key_revoke(*, api_key_id: int, actor: User) -> ApiKey:
    """Revoke a key of the actor's (operators: anyone's). Idempotent: revoking twice keeps the
    first time. Raises ApiKeyNotFound. After commit, the connections the key opened close."""
    keys = ApiKey.objects.all() if actor.is_staff else ApiKey.objects.filter(user=actor)
    with transaction.atomic():
        updated = keys.filter(pk=api_key_id, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        try:
            api_key = keys.get(pk=api_key_id)
        except ApiKey.DoesNotExist as exc:
            raise ApiKeyNotFound() from exc
        if updated:
            # After commit: the key's open WebSocket connections close (accounts.connections).
            connections.close_for_api_key(api_key.pk)
    return api_key


def api_key_touch(*, api_key: ApiKey, min_interval_seconds: int = 60) -> None:
    """Record use, at most once a minute per key so authentication does not write per request."""
    now = timezone.now()
    if api_key.last_used_at and (now - api_key.last_used_at).total_seconds() < min_interval_seconds:
        return
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    api_key.last_used_at = now
