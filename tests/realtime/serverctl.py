"""Commands the server tests run in a separate process against the server's database and
Redis: `python -m tests.realtime.serverctl <command> '<json arguments>'` prints JSON."""

import json
import sys


def setup(_):
    """A draft project between a new homeowner and contractor, a stranger, and their keys."""
    from accounts.models import User
    from accounts.services import api_key_create
    from escrow.models import Milestone, Project

    suffix = User.objects.count()
    homeowner = User.objects.create(username=f"home{suffix}", role="homeowner")
    contractor = User.objects.create(username=f"cont{suffix}", role="contractor")
    stranger = User.objects.create(username=f"strange{suffix}", role="homeowner")
    project = Project.objects.create(
        homeowner=homeowner, contractor=contractor, title="Kitchen", currency="usd"
    )
    milestone = Milestone.objects.create(project=project, title="Cabinets", amount=5000, position=0)
    return {
        "project": project.pk,
        "milestone": milestone.pk,
        "homeowner": {"id": homeowner.pk, "key": api_key_create(user=homeowner)[1]},
        "contractor": {"id": contractor.pk, "key": api_key_create(user=contractor)[1]},
        "stranger": {"id": stranger.pk, "key": api_key_create(user=stranger)[1]},
    }


def emit_events(arguments):
    """Emit `count` events (each in its own transaction) on `channels` for `audience`."""
    from django.db import transaction

    from realtime.events import emit

    ids = []
    for number in range(arguments["count"]):
        with transaction.atomic():
            event = emit(
                arguments.get("type", "payment.status_updated"),
                {"n": number, "blob": "x" * arguments.get("size", 0)},
                aggregate=("payment", 1),
                audience=arguments["audience"],
                channels=arguments["channels"],
            )
        ids.append(event.pk)
    return {"ids": ids}


def revoke_keys(arguments):
    from accounts.models import ApiKey, User
    from accounts.services import api_key_revoke

    user = User.objects.get(pk=arguments["user"])
    for api_key in ApiKey.objects.filter(user=user, revoked_at__isnull=True):
        api_key_revoke(api_key_id=api_key.pk, actor=user)
    return {"revoked": True}


def sign_in(arguments):
    """A new portal session for the user, as a login makes it: its `sessionid` cookie value
    (under both names the tests use)."""
    from django.test import Client

    from accounts.models import User

    client = Client()
    client.force_login(User.objects.get(pk=arguments["user"]))
    key = client.cookies["sessionid"].value
    return {"sessionid": key, "session": key}


def deactivate(arguments):
    from accounts.models import User
    from accounts.services import user_set_active

    root = User.objects.filter(is_superuser=True).first() or User.objects.create_superuser(
        f"root{User.objects.count()}", "", None
    )
    user_set_active(user_id=arguments["user"], is_active=False, actor=root)
    return {"deactivated": True}


COMMANDS = {
    "setup": setup,
    "emit": emit_events,
    "revoke": revoke_keys,
    "session": sign_in,
    "sign_in": sign_in,
    "deactivate": deactivate,
}


def main() -> None:
    import django

    django.setup()
    command, arguments = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps(COMMANDS[command](arguments)))


if __name__ == "__main__":
    main()
