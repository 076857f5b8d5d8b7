from django.contrib.auth.backends import BaseBackend

from accounts.permissions import operator_permissions


class OperatorPermissionsBackend(BaseBackend):
    """Operators' permissions without rows in the permission tables: the explicit set in
    accounts.permissions (view everything, change only what a service writes). Superusers get
    everything from ModelBackend; everyone else gets nothing from here."""

    def authenticate(self, request, **credentials):
        return None

    def _is_operator(self, user) -> bool:
        return bool(user.is_active and user.is_staff and getattr(user, "role", "") == "operator")

    def get_all_permissions(self, user_obj, obj=None):
        return set(operator_permissions()) if self._is_operator(user_obj) else set()

    def has_perm(self, user_obj, perm, obj=None):
        return self._is_operator(user_obj) and perm in operator_permissions()

    def has_module_perms(self, user_obj, app_label):
        prefix = f"{app_label}."
        return self._is_operator(user_obj) and any(
            perm.startswith(prefix) for perm in operator_permissions()
        )
