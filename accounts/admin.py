from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from accounts import services
from accounts.forms import AdminPasswordChangeForm
from accounts.models import ApiKey, User

# Only a superuser edits these; for anyone else they are shown, never a form field.
SUPERUSER_ONLY_FIELDS = ("role", "groups", "user_permissions")


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    """Operators see users (view permission, accounts.permissions); superusers change them.

    `is_staff` is never a form field: it follows the role (user_set_role). `is_superuser` is
    granted with `manage.py createsuperuser`, not here. A role change goes through
    user_set_role, activation through user_set_active (which closes a deactivated user's
    live connections), a password through user_password_set; the rest of the form (names,
    e-mail) is saved as usual."""

    list_display = ["username", "email", "role", "is_staff", "is_active", "date_joined"]
    list_filter = ["role", "is_staff", "is_active"]
    fieldsets = (*BaseUserAdmin.fieldsets, ("Marketplace", {"fields": ("role",)}))
    add_fieldsets = (*BaseUserAdmin.add_fieldsets, ("Marketplace", {"fields": ("role",)}))
    change_password_form = AdminPasswordChangeForm

    def get_readonly_fields(self, request, obj=None):
        readonly = [*super().get_readonly_fields(request, obj), "is_staff", "is_superuser"]
        if not request.user.is_superuser:
            readonly += SUPERUSER_ONLY_FIELDS
        return readonly

    def has_change_permission(self, request, obj=None):
        # A superuser's account is changed by superusers only, whatever else was granted.
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False
        return super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        if not change:
            self._add_through_service(obj, form)
            return
        new_role, new_is_active = obj.role, obj.is_active
        role_changed = "role" in form.changed_data
        active_changed = "is_active" in form.changed_data
        if role_changed:
            obj.role = form.initial["role"]  # saved below with is_staff still matching
        if active_changed:
            obj.is_active = form.initial["is_active"]  # through the service, below
        super().save_model(request, obj, form, change)
        if role_changed:
            saved = services.user_set_role(user_id=obj.pk, role=new_role, actor=request.user)
            obj.role, obj.is_staff = saved.role, saved.is_staff
        if active_changed:
            saved = services.user_set_active(
                user_id=obj.pk, is_active=new_is_active, actor=request.user
            )
            obj.is_active = saved.is_active

    def _add_through_service(self, obj, form):
        usable = form.cleaned_data.get("usable_password") != "false"
        saved = services.user_create(
            username=obj.username,
            role=obj.role,
            email=obj.email,
            password=form.cleaned_data.get("password1") if usable else None,
        )
        # The admin's log entry, message and redirect read `obj`: make it the saved row.
        for field in saved._meta.concrete_fields:
            setattr(obj, field.attname, getattr(saved, field.attname))
        obj._state.adding = False
        obj._state.db = saved._state.db


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["__str__", "user", "name", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["prefix", "user__username", "name"]
    readonly_fields = ["user", "prefix", "key_hash", "created_at", "last_used_at", "revoked_at"]
    fields = ["user", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request):
        # Keys are created with `manage.py create_api_key` so the raw key is shown once.
        return False

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        for api_key in queryset:
            services.api_key_revoke(api_key_id=api_key.pk, actor=request.user)
        messages.success(request, f"Revoked {queryset.count()} key(s).")
