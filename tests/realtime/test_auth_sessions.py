"""A WebSocket lives only as long as what authenticated it: logging out, changing the password
(portal or admin), deactivating the user (admin) and revoking the key close the connections it
opened at once, with 4001, and nothing is delivered on them after; everyone else's stay open.
Through the real ASGI stack with Channels' communicator (the cross-process case with Redis is
in test_server_redis.py)."""

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from accounts.models import User
from accounts.services import user_set_active
from realtime.auth import auth_groups
from realtime.consumers import CLOSE_AUTH_REVOKED
from tests.factories import HomeownerFactory, raw_key_for
from tests.realtime.conftest import ORIGIN, aemit, connect, nothing_more, receive_until

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-battery"
NEW_PASSWORD = "staple-orbit-lantern-9"


@database_sync_to_async
def make_user(**fields):
    user = HomeownerFactory(**fields)
    user.set_password(PASSWORD)
    user.save()
    return user


@database_sync_to_async
def signed_in(user) -> Client:
    """A browser signed in as `user` (a session of its own)."""
    client = Client()
    client.force_login(user)
    return client


def cookie_of(client: Client) -> tuple[bytes, bytes]:
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


async def session_socket(client: Client):
    return await connect(headers=[cookie_of(client), ORIGIN])


async def closed_code(communicator, timeout=1) -> int:
    """The close code the server sends within `timeout` seconds (skipping anything before)."""
    output = await communicator.receive_output(timeout=timeout)
    while output["type"] != "websocket.close":
        output = await communicator.receive_output(timeout=timeout)
    return output["code"]


async def still_receives(communicator, user) -> bool:
    """A new event for `user` reaches this socket (earlier ones are skipped)."""
    event = await aemit(channels=[f"user.{user.pk}.payments"], audience=[user])
    message = await receive_until(communicator, lambda m: m.get("id", 0) >= event.position)
    return message["id"] == event.position


async def test_logging_out_closes_that_sessions_sockets_only_and_nothing_follows():
    """Given a user with two signed-in browsers and a token client, and another user;
    when one browser logs out; then its socket closes with 4001 and gets no later event,
    while the other browser's, the token's and the other user's sockets keep receiving."""
    user, other = await make_user(), await make_user()
    leaving, staying, others = await signed_in(user), await signed_in(user), await signed_in(other)
    leaving_socket = await session_socket(leaving)
    staying_socket = await session_socket(staying)
    token_socket = await connect(key=await database_sync_to_async(raw_key_for)(user))
    other_socket = await session_socket(others)

    response = await database_sync_to_async(leaving.post)("/accounts/logout/")

    assert response.status_code == 302
    assert await closed_code(leaving_socket) == CLOSE_AUTH_REVOKED
    assert await still_receives(staying_socket, user)
    assert await still_receives(token_socket, user)
    assert await still_receives(other_socket, other)
    assert await nothing_more(leaving_socket)
    for communicator in (staying_socket, token_socket, other_socket):
        await communicator.disconnect()


async def test_a_password_change_closes_every_session_socket_of_the_user_but_not_the_key():
    """Given a user signed in twice plus a token client; when one browser changes its
    password on the portal; then every socket a session of the user opened closes with 4001,
    the token client and another user keep receiving, the changing browser stays signed in
    over HTTP and the other session is signed out."""
    user, other = await make_user(), await make_user()
    changing, elsewhere = await signed_in(user), await signed_in(user)
    others = await signed_in(other)
    changing_socket = await session_socket(changing)
    elsewhere_socket = await session_socket(elsewhere)
    token_socket = await connect(key=await database_sync_to_async(raw_key_for)(user))
    other_socket = await session_socket(others)

    response = await database_sync_to_async(changing.post)(
        "/accounts/password/",
        {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )

    assert response.status_code == 302
    assert response["Location"] == "/accounts/password/done/"
    assert await closed_code(changing_socket) == CLOSE_AUTH_REVOKED
    assert await closed_code(elsewhere_socket) == CLOSE_AUTH_REVOKED
    assert await still_receives(token_socket, user)
    assert await still_receives(other_socket, other)
    assert (await database_sync_to_async(changing.get)("/")).status_code == 200
    assert (await database_sync_to_async(elsewhere.get)("/")).status_code == 302
    # The changing browser's new session opens a socket again; the other one cannot.
    await (await session_socket(changing)).disconnect()
    await connect(headers=[cookie_of(elsewhere), ORIGIN], expect=False)
    for communicator in (token_socket, other_socket):
        await communicator.disconnect()


async def test_a_password_set_in_the_admin_closes_the_users_session_sockets():
    """Given a signed-in user; when a superuser sets their password in the admin; then the
    user's socket closes with 4001 and the superuser's own stays open."""
    user = await make_user()
    root = await database_sync_to_async(User.objects.create_superuser)("root", "", PASSWORD)
    browser, admin_browser = await signed_in(user), await signed_in(root)
    socket = await session_socket(browser)
    admin_socket = await session_socket(admin_browser)

    response = await database_sync_to_async(admin_browser.post)(
        f"/admin/accounts/user/{user.pk}/password/",
        {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"},
    )

    assert response.status_code == 302
    assert await closed_code(socket) == CLOSE_AUTH_REVOKED
    assert await still_receives(admin_socket, root)
    refreshed = await database_sync_to_async(User.objects.get)(pk=user.pk)
    assert refreshed.check_password(NEW_PASSWORD)
    await admin_socket.disconnect()


async def test_deactivating_a_user_in_the_admin_closes_all_their_sockets():
    """Given a user with a session socket and a token socket; when a superuser unticks
    "active" on their admin page; then both close with 4001, get nothing after, and the user
    is inactive; another user's socket stays open."""
    from tests.accounts.test_permissions import _change_form_data

    user, other = await make_user(), await make_user()
    root = await database_sync_to_async(User.objects.create_superuser)("root", "", PASSWORD)
    admin_browser = await signed_in(root)
    session = await session_socket(await signed_in(user))
    token = await connect(key=await database_sync_to_async(raw_key_for)(user))
    other_socket = await session_socket(await signed_in(other))
    data = _change_form_data(user)
    del data["is_active"]

    response = await database_sync_to_async(admin_browser.post)(
        f"/admin/accounts/user/{user.pk}/change/", data
    )

    assert response.status_code == 302
    assert await closed_code(session) == CLOSE_AUTH_REVOKED
    assert await closed_code(token) == CLOSE_AUTH_REVOKED
    assert await still_receives(other_socket, other)
    await aemit(channels=[f"user.{user.pk}.payments"], audience=[user])
    assert await nothing_more(session)
    assert await nothing_more(token)
    assert (await database_sync_to_async(User.objects.get)(pk=user.pk)).is_active is False
    await other_socket.disconnect()


async def test_reactivating_a_user_closes_nothing():
    """Given an active user's socket; when user_set_active is asked to keep them active;
    then nothing is sent and the socket keeps receiving."""
    user = await make_user()
    root = await database_sync_to_async(User.objects.create_superuser)("root", "", PASSWORD)
    socket = await session_socket(await signed_in(user))

    await database_sync_to_async(user_set_active)(user_id=user.pk, is_active=True, actor=root)

    assert await still_receives(socket, user)
    await socket.disconnect()


async def test_a_session_missed_by_its_close_message_is_caught_by_the_recheck(settings):
    """Given a session socket and a short re-check period; when the session is deleted behind
    the server's back (no close message); then the next re-check closes it with 4001."""
    settings.REALTIME_HEARTBEAT_SECONDS = 0.05
    settings.REALTIME_AUTH_RECHECK_SECONDS = 0.05
    user = await make_user()
    browser = await signed_in(user)
    socket = await session_socket(browser)

    await database_sync_to_async(browser.session.delete)()

    assert await closed_code(socket, timeout=3) == CLOSE_AUTH_REVOKED


async def test_group_names_never_carry_the_session_key():
    """The session's group is named by a hash: the key itself is a credential."""
    user = await make_user()
    browser = await signed_in(user)
    session_key = browser.cookies["sessionid"].value

    from django.contrib.sessions.backends.db import SessionStore

    groups = auth_groups(
        {"user": user, "auth_method": "session", "session": SessionStore(session_key)}
    )

    assert groups[0] == f"auth.user.{user.pk}"
    assert groups[1].startswith("auth.session.")
    assert all(session_key not in group for group in groups)
