"""`make serve` lets Daphne rewrite the client address from X-Forwarded-For only when told it
sits behind a proxy that sets that header (the login lockout keys on the address)."""

from config import daphne_flags, serve


def test_by_default_daphne_ignores_forwarded_headers(monkeypatch):
    monkeypatch.delenv("PROXY_HEADERS", raising=False)

    command = serve.daphne_command("daphne", 7, proxy_headers=serve._env_flag("PROXY_HEADERS"))

    assert "--proxy-headers" not in command
    assert command == ["daphne", *daphne_flags.flags(), "--fd", "7", "config.asgi:application"]


def test_behind_a_proxy_the_forwarded_address_is_used(monkeypatch):
    monkeypatch.setenv("PROXY_HEADERS", "true")

    command = serve.daphne_command("daphne", 7, proxy_headers=serve._env_flag("PROXY_HEADERS"))

    assert "--proxy-headers" in command
