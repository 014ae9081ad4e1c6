from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import UserChangeForm, UserCreationForm
from django.template.response import TemplateResponse

from core.http.exceptions import PaymentRequired

from . import services
from .models import CoinLedgerEntry, User


class LedgerInline(admin.TabularInline):
    model = CoinLedgerEntry
    fields = ("created_at", "amount", "reason", "reference", "balance_after")
    readonly_fields = fields
    ordering = ("-id",)
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False


class EmailUserCreationForm(UserCreationForm):
    class Meta:
        model = User
        fields = ("email",)


class EmailUserChangeForm(UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"


class CoinAdjustForm(forms.Form):
    kind = forms.ChoiceField(choices=[("grant", "Grant"), ("refund", "Refund"), ("deduct", "Deduct (a correction)")])
    amount = forms.IntegerField(min_value=1, max_value=1_000_000, help_text="Coins per selected user.")
    note = forms.CharField(max_length=150, label="Reason", help_text="Recorded in each ledger entry, with your email.")


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    form = EmailUserChangeForm
    add_form = EmailUserCreationForm
    list_display = ("email", "display_name", "coin_balance", "is_active", "is_staff", "date_joined")
    list_filter = ("is_active", "is_staff")
    search_fields = ("email", "display_name")
    ordering = ("-id",)
    readonly_fields = ("coin_balance", "date_joined", "last_login")
    fieldsets = (
        (None, {"fields": ("email", "password", "display_name", "coin_balance")}),
        ("Status", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("date_joined", "last_login")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)
    inlines = [LedgerInline]
    actions = ["adjust_coins"]

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else []  # a user being added has no ledger yet


    @admin.action(description="Grant, refund or deduct coins of selected users", permissions=["change"])
    def adjust_coins(self, request, queryset):
        """An intermediate form (amount, kind, reason), then one ledger entry per user through
        accounts.services: the balance and the cached coins follow, and it never goes below zero."""
        form = CoinAdjustForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            done, short = [], []
            for user in queryset.order_by("email"):
                try:
                    entry = services.coins_admin_adjust(
                        user_id=user.id, kind=form.cleaned_data["kind"], amount=form.cleaned_data["amount"],
                        note=form.cleaned_data["note"], staff_email=request.user.email)
                except PaymentRequired:
                    short.append(user.email)
                    continue
                done.append(user.email)
                self.log_change(request, user, f"Coins {entry.amount:+d} ({entry.reason}): {form.cleaned_data['note']}")
            if done:
                self.message_user(request, f"{form.cleaned_data['kind'].capitalize()} of {form.cleaned_data['amount']} "
                                           f"coin(s) recorded for {len(done)} user(s).", messages.SUCCESS)
            if short:
                self.message_user(request, f"Not deducted (the balance is smaller, it never goes below zero): "
                                           f"{', '.join(short)}.", messages.ERROR)
            return None  # back to the list
        context = {
            **self.admin_site.each_context(request),
            "title": "Grant, refund or deduct coins",
            "opts": self.model._meta,
            "form": form,
            "users": queryset.order_by("email"),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "action": "adjust_coins",
        }
        return TemplateResponse(request, "admin/accounts/user/adjust_coins.html", context)


@admin.register(CoinLedgerEntry)
class CoinLedgerEntryAdmin(admin.ModelAdmin):
    list_display = ("created_at", "user", "amount", "reason", "reference", "balance_after")
    list_filter = ("reason",)
    search_fields = ("user__email", "reference")
    list_select_related = ("user",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
