"""Closing the live connections (WebSockets) a credential opened, when the credential ends.

Every WebSocket joins channel-layer groups for what authenticated it (realtime.consumers): its
session, or its API key, and its user. Logging out, changing the password, deactivating the
user and revoking a key send one message to the matching group after commit; every server
process holding such a connection hears it and closes it: the Redis layer spans processes;
the embedded in-memory layer reaches only its own, so there the message is also written to
ConnectionClose, in the caller's transaction, and every process's realtime.tailer reads it
within REALTIME_TAIL_SECONDS. Consumers also re-check their credential periodically, for a
message lost anyway.

Group names never carry the session key itself: a group name is visible to anyone who can list
the channel layer's Redis channels, and the session key is the credential. They carry a
SHA-256 of it instead.

This lives in accounts, which owns sessions, keys and users, so accounts never imports
realtime (the dependency runs realtime → accounts); realtime's consumer joins these groups."""

import hashlib
import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

logger = logging.getLogger(__name__)

# The message type the consumer handles (EventsConsumer.auth_ended).
MESSAGE_TYPE = "auth.ended"
# How long a ConnectionClose row is kept: far longer than any process's tail period.
KEEP_FOR = timedelta(minutes=10)


class Reason:
    LOGGED_OUT = "logged_out"
    PASSWORD_CHANGED = "password_changed"
    USER_DEACTIVATED = "user_deactivated"
    API_KEY_REVOKED = "api_key_revoked"


def session_group(session_key: str) -> str:
    return f"auth.session.{hashlib.sha256(session_key.encode()).hexdigest()}"


def api_key_group(api_key_id: int) -> str:
    return f"auth.key.{api_key_id}"


def user_group(user_id: int) -> str:
    return f"auth.user.{user_id}"


def close_for_session(session_key: str | None) -> None:
    """After commit: close the connections this session authenticated (a logout)."""
    if session_key:
        _send_on_commit(session_group(session_key), reason=Reason.LOGGED_OUT)


def close_for_api_key(api_key_id: int) -> None:
    """After commit: close the connections this API key authenticated (a revocation)."""
    _send_on_commit(api_key_group(api_key_id), reason=Reason.API_KEY_REVOKED)


def close_for_user(user_id: int, *, reason: str, sessions_only: bool) -> None:
    """After commit: close every connection of this user; with `sessions_only`, only those a
    session authenticated (a password change ends sessions, not API keys)."""
    _send_on_commit(user_group(user_id), reason=reason, sessions_only=sessions_only)


def message_for(*, reason: str, sessions_only: bool) -> dict:
    return {"type": MESSAGE_TYPE, "reason": reason, "sessions_only": sessions_only}


def _send_on_commit(group: str, *, reason: str, sessions_only: bool = False) -> None:
    if _layer_is_per_process():
        from accounts.models import ConnectionClose

        ConnectionClose.objects.filter(created_at__lt=timezone.now() - KEEP_FOR).delete()
        ConnectionClose.objects.create(group=group, reason=reason, sessions_only=sessions_only)
    message = message_for(reason=reason, sessions_only=sessions_only)
    transaction.on_commit(lambda: _send(group, message))


def _layer_is_per_process() -> bool:
    backend = settings.CHANNEL_LAYERS.get("default", {}).get("BACKEND", "")
    return backend == "channels.layers.InMemoryChannelLayer" and settings.REALTIME_TAIL_SECONDS > 0


def _send(group: str, message: dict) -> None:
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception:  # the layer is down: connections re-check their credential periodically
        logger.warning("could not close live connections", extra={"reason": message["reason"]})
