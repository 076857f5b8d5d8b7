import hashlib

from django.contrib.auth import views as auth_views
from django.core.cache import cache

LOGIN_ATTEMPTS_PER_WINDOW = 10
LOGIN_WINDOW_SECONDS = 300


class RateLimitedLoginView(auth_views.LoginView):
    """Django's login, refusing a client after too many failed attempts in a short window."""

    template_name = "accounts/login.html"
    redirect_authenticated_user = True

    def _bucket(self) -> str:
        client = self.request.META.get("REMOTE_ADDR", "")
        username = self.request.POST.get("username", "")[:150].lower()
        digest = hashlib.sha256(f"{client}|{username}".encode()).hexdigest()[:32]
        return f"login-failures:{digest}"

    def post(self, request, *args, **kwargs):
        if cache.get(self._bucket(), 0) >= LOGIN_ATTEMPTS_PER_WINDOW:
            form = self.get_form()
            form.errors.clear()
            form.add_error(None, "Too many failed attempts. Try again in a few minutes.")
            response = self.render_to_response(self.get_context_data(form=form))
            response.status_code = 429
            return response
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        bucket = self._bucket()
        cache.add(bucket, 0, LOGIN_WINDOW_SECONDS)
        try:
            cache.incr(bucket)
        except ValueError:
            cache.set(bucket, 1, LOGIN_WINDOW_SECONDS)
        return super().form_invalid(form)
