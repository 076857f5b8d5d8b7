"""What operators may do in the admin: the one list (OperatorPermissionsBackend reads it).

Operators run the platform from the admin: they may *view* every model, and act through the
admin actions, which call services (an action needs only the view permission, see each app's
admin.py). Beyond viewing they get only the add/change permissions named in
OPERATOR_WRITE_PERMISSIONS: models whose admin form writes through a service. Nothing else:
no editing of users, roles, groups or permissions (only a superuser changes a role:
accounts.services.user_set_role), no ledger writes, no deletes.

A new admin form for operators that saves through a service adds its permissions here."""

from functools import cache

from django.apps import apps
from django.contrib.auth import get_permission_codename

OPERATOR_WRITE_PERMISSIONS = frozenset(
    {
        # PayoutAccountAdmin saves through payments.services.payout_account_set, which also
        # sends the payouts that waited for an account.
        "payments.add_payoutaccount",
        "payments.change_payoutaccount",
        # Title and due date; webhook endpoint URL, description and active flag. Their admin
        # forms save through services (project/milestone_update_details,
        # webhook_endpoint_update: issue 14, item 11, a parallel change).
        "escrow.change_project",
        "escrow.change_milestone",
        "realtime.change_webhookendpoint",
    }
)


@cache
def operator_permissions() -> frozenset[str]:
    """Every model's view permission plus OPERATOR_WRITE_PERMISSIONS."""
    view = {
        f"{model._meta.app_label}.{get_permission_codename('view', model._meta)}"
        for model in apps.get_models()
        if "view" in model._meta.default_permissions
    }
    return frozenset(view | OPERATOR_WRITE_PERMISSIONS)
