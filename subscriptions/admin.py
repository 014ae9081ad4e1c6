from django.contrib import admin

from .models import Plan, Subscription


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "price", "coins_per_period", "daily_generation_limit",
                    "daily_message_limit", "includes_premium", "is_active", "sort_order")
    list_editable = ("sort_order",)


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ("user", "plan", "status", "current_period_start", "current_period_end", "auto_renew")
    list_filter = ("status", "plan")
    search_fields = ("user__email",)
    list_select_related = ("user", "plan")
    raw_id_fields = ("user",)
    # A plan is paid for or granted with a reason (Payments > Plan grants), never edited in here.
    readonly_fields = ("plan", "next_plan", "status", "current_period_start", "current_period_end")
