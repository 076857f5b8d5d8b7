"""The admin as a door: a change form that writes through a service.

Django's `ModelAdmin.changeform_view` wraps the whole form handling in `transaction.atomic()`
and saves with a full-row `obj.save()`. Our entry-point services open their own durable
transaction and lock the row they change (STYLE.md), so inside the admin's block they raise
("A durable atomic block cannot be nested"), and a full-row save from a form read before the
lock overwrites whatever a service changed in between (a status, a balance). A ModelAdmin with
`ServiceFormMixin` handles its form outside any transaction and hands only the fields the
operator changed to `save_through_service`, which calls the one service that owns the rule
(with the same locks and checks as the API). A refusal (`DomainError`) is shown to the
operator and changes nothing; the service's own transaction has rolled back and no admin log
entry is written."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.options import csrf_protect_m
from django.db import models
from django.http import HttpResponseRedirect

from common.errors import DomainError


class ServiceFormMixin:
    """Mix into a ModelAdmin (before `admin.ModelAdmin`) whose form writes through a service.

    Subclasses implement `save_through_service(request, obj, changes, change)` and return the
    saved row; `changes` maps the names of the fields the operator changed to their cleaned
    values (on add: every field of the form). Deleting is refused: no service deletes these
    rows from the admin."""

    service_form = True  # read by the admin-site test that walks every ModelAdmin

    @csrf_protect_m
    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        # Not Django's atomic block: the service opens the transaction (durable), and the
        # admin log entry is written after the service committed.
        try:
            return self._changeform_view(request, object_id, form_url, extra_context)
        except DomainError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def save_model(self, request, obj, form, change):
        changes = {name: form.cleaned_data[name] for name in form.changed_data}
        if change and not changes:
            return
        saved = self.save_through_service(request, obj, changes, change)
        # The admin's messages, log entry and redirect read `obj`: make it the saved row.
        for field in saved._meta.concrete_fields:
            setattr(obj, field.attname, getattr(saved, field.attname))

    def save_through_service(
        self, request, obj: models.Model, changes: dict[str, Any], change: bool
    ) -> models.Model:
        raise NotImplementedError

    def has_delete_permission(self, request, obj=None):
        return False


def is_service_form(model_admin: admin.ModelAdmin) -> bool:
    return bool(getattr(model_admin, "service_form", False))


class ReadOnlyMixin:
    """For rows only services write (the ledger, the event store, gateway records): operators
    with view permission read them; nobody adds, changes or deletes them in the admin."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """The one read-only ModelAdmin every app's admin uses for service-written rows."""


class ReadOnlyInline(ReadOnlyMixin, admin.TabularInline):
    """A read-only table of a row's children (attempts, postings, refunds): every listed field
    is shown read-only, no blank extra rows, nothing added, changed or deleted."""

    extra = 0
    can_delete = False

    def get_readonly_fields(self, request, obj=None):
        return self.fields or super().get_readonly_fields(request, obj)
