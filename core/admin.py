from django.contrib import admin

from .models import PendingInvalidation


@admin.register(PendingInvalidation)
class PendingInvalidationAdmin(admin.ModelAdmin):
    list_display = ("key", "created_at")
    readonly_fields = ("key", "created_at")
