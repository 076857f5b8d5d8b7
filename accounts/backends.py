from django.contrib.auth.backends import BaseBackend


class OperatorPermissionsBackend(BaseBackend):
    """Operators run the platform from the admin: every model permission, without being
    superusers. (What the admin lets them do is still limited by each ModelAdmin, which only
    offers service-backed actions and read-only ledgers.)"""

    def authenticate(self, request, **credentials):
        return None

    def _is_operator(self, user) -> bool:
        return bool(user.is_active and user.is_staff and getattr(user, "role", "") == "operator")

    def has_perm(self, user_obj, perm, obj=None):
        return self._is_operator(user_obj)

    def has_module_perms(self, user_obj, app_label):
        return self._is_operator(user_obj)
