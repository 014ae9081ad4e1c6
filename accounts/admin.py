from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import UserChangeForm, UserCreationForm

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

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else []  # a user being added has no ledger yet


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
