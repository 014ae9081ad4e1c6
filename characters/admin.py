from django.contrib import admin, messages
from django.db import models

from . import services
from .cache import invalidate_characters
from .models import Character


@admin.register(Character)
class CharacterAdmin(admin.ModelAdmin):
    list_display = ("name", "display_name", "is_premium", "is_active", "sort_order", "updated_at")
    list_filter = ("is_active", "is_premium")
    search_fields = ("name", "display_name")
    prepopulated_fields = {"name": ("display_name",)}
    actions = ["activate", "deactivate", "refresh_cache"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}  # Django 6.0's default

    def save_model(self, request, obj, form, change):
        services.character_save(character=obj)

    @admin.action(description="Activate selected characters")
    def activate(self, request, queryset):
        count = services.characters_set_active(names=list(queryset.values_list("name", flat=True)), active=True)
        self.message_user(request, f"{count} activated.", messages.SUCCESS)

    @admin.action(description="Deactivate selected characters")
    def deactivate(self, request, queryset):
        count = services.characters_set_active(names=list(queryset.values_list("name", flat=True)), active=False)
        self.message_user(request, f"{count} deactivated.", messages.SUCCESS)

    @admin.action(description="Refresh cache of selected characters")
    def refresh_cache(self, request, queryset):
        names = list(queryset.values_list("name", flat=True))
        invalidate_characters(names=names)
        self.message_user(request, f"Cache refreshed for {len(names)} character(s) and the list.", messages.SUCCESS)
