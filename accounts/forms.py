"""Django's password forms, saving through accounts.services.user_password_set (which also
closes the user's other live connections) instead of `user.set_password(); user.save()`."""

from django.contrib.auth import forms as auth_forms

from accounts import services


class _SavesThroughService:
    user = None

    def save(self, commit=True):
        usable = self.cleaned_data.get("set_usable_password", True)
        field = "new_password1" if "new_password1" in self.cleaned_data else "password1"
        saved = services.user_password_set(
            user_id=self.user.pk, password=self.cleaned_data[field] if usable else None
        )
        # The view keeps its own session with update_session_auth_hash(request, form.user),
        # which reads the new hash from this object.
        self.user.password = saved.password
        return self.user


class PasswordChangeForm(_SavesThroughService, auth_forms.PasswordChangeForm):
    """The portal's password page (/accounts/password/)."""


class AdminPasswordChangeForm(_SavesThroughService, auth_forms.AdminPasswordChangeForm):
    """The admin's "change password" form for a user."""
