"""Payments and their events are records of what the provider said: read-only. Staff grant a
plan period through PlanGrant, with the reason; the grant goes through the services (coins
through the ledger, caches invalidated)."""

from django.contrib import admin
from django.db import models

from .models import Payment, PaymentEvent, PlanGrant
from .services import plan_grant


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class PaymentEventInline(admin.TabularInline):
    model = PaymentEvent
    fields = ("received_at", "event_id", "type", "outcome")
    readonly_fields = fields
    ordering = ("id",)
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "user", "plan", "kind", "status", "amount", "currency", "provider",
                    "coins_granted", "coins_reversed", "dispute")
    list_filter = ("status", "dispute", "kind", "provider", "plan")
    search_fields = ("user__email", "provider_ref", "provider_payment_ref", "provider_customer", "=id")
    list_select_related = ("user", "plan")
    date_hierarchy = "created_at"
    inlines = [PaymentEventInline]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}  # Django 6.0's default


@admin.register(PaymentEvent)
class PaymentEventAdmin(ReadOnlyAdmin):
    list_display = ("received_at", "provider", "event_id", "type", "outcome", "payment")
    list_filter = ("outcome", "provider", "type")
    search_fields = ("event_id", "type", "payment_ref", "payment_intent", "payment__user__email")
    list_select_related = ("payment__user", "payment__plan")  # a payment is named by its plan and user
    date_hierarchy = "received_at"


@admin.register(PlanGrant)
class PlanGrantAdmin(admin.ModelAdmin):
    """Add one to give a user a plan period without payment; the reason is required and kept."""

    list_display = ("created_at", "user", "plan", "granted_by", "coins_granted", "reason")
    list_filter = ("plan",)
    search_fields = ("user__email", "reason", "granted_by__email")
    list_select_related = ("user", "plan", "granted_by")
    raw_id_fields = ("user",)
    fields = ("user", "plan", "reason")

    def get_readonly_fields(self, request, obj=None):
        return ("user", "plan", "reason", "granted_by", "coins_granted", "created_at") if obj else ()

    def get_fields(self, request, obj=None):
        return self.get_readonly_fields(request, obj) or self.fields

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        grant = plan_grant(user_id=obj.user_id, plan=obj.plan, reason=obj.reason, granted_by_id=request.user.pk)
        obj.pk, obj._state.adding = grant.pk, False
