from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self):
        from django.contrib.auth.signals import user_logged_out

        from accounts import schema  # noqa: F401 - registers the OpenAPI auth scheme

        # Auth plumbing, not domain logic: every logout (portal, admin) goes through
        # django.contrib.auth.logout, which sends this before it flushes the session.
        user_logged_out.connect(_close_session_connections, dispatch_uid="accounts.logout")


def _close_session_connections(sender, request, user, **kwargs):
    from accounts import connections

    connections.close_for_session(request.session.session_key)
