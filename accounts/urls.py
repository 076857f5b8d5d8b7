from django.contrib.auth import views as auth_views
from django.urls import path

from accounts.forms import PasswordChangeForm

urlpatterns = [
    # Failed logins are limited by django-axes (settings "Login lockout"), here and in the admin.
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="accounts/login.html", redirect_authenticated_user=True
        ),
        name="login",
    ),
    # Logging out closes the session's WebSockets (accounts.apps: user_logged_out).
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path(
        "password/",
        auth_views.PasswordChangeView.as_view(
            template_name="accounts/password_change.html", form_class=PasswordChangeForm
        ),
        name="password_change",
    ),
    path(
        "password/done/",
        auth_views.PasswordChangeDoneView.as_view(
            template_name="accounts/password_change_done.html"
        ),
        name="password_change_done",
    ),
]
