"""How django-axes identifies a login attempt: the username as authentication sees it and the
client address. Settings: AXES_USERNAME_CALLABLE and AXES_CLIENT_IP_CALLABLE.

A counter keyed on anything else is a bypass: the login form strips surrounding whitespace and
applies Unicode NFKC before it calls authenticate(), so `" alice"`, `"alice\\t"` and
`"ａｌｉｃｅ"` all log in as `alice` and must count as `alice`. Usernames are compared exactly
(no case folding; `Alice` is another account), so case is kept."""

from django.contrib.auth.forms import AuthenticationForm

# The login forms' own username field (the portal's LoginView and the admin's
# AdminAuthenticationForm both use AuthenticationForm's): its to_python is the normalisation.
_USERNAME_FIELD = AuthenticationForm.base_fields["username"]


def normalize_login_username(raw: object) -> str:
    """The username the login forms hand to authenticate() for this input."""
    if not isinstance(raw, str):
        return ""
    return _USERNAME_FIELD.to_python(raw)


def login_username(request, credentials: dict | None) -> str:
    """AXES_USERNAME_CALLABLE. Credentials (from authenticate() and its signals) are already
    normalised by the form; the POST body (axes' fallback) is not, so both go through it."""
    if credentials is not None and "username" in credentials:
        raw = credentials["username"]
    else:
        raw = request.POST.get("username", "") if request is not None else ""
    return normalize_login_username(raw)


def client_address(request) -> str:
    """AXES_CLIENT_IP_CALLABLE: REMOTE_ADDR, never a request header a client can set. Behind a
    proxy the server rewrites REMOTE_ADDR from X-Forwarded-For only when PROXY_HEADERS is on
    (config/serve.py)."""
    return request.META.get("REMOTE_ADDR", "")
