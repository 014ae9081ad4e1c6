import redis
from django.contrib import admin, messages
from django.db import models

from core.cache.api import warm

from . import services
from .cache import CHARACTER, CHARACTERS_LIST, invalidate_characters
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

    @admin.action(description="Rebuild cache of selected characters (and the list)")
    def refresh_cache(self, request, queryset):
        names = sorted(queryset.values_list("name", flat=True))
        invalidate_characters(names=names)  # outside a transaction here: the keys are gone at once
        targets = [(CHARACTERS_LIST, {}), *((CHARACTER, {"name": name}) for name in names)]
        try:
            result = warm(targets)  # rebuilt from the database through the normal read path
        except redis.RedisError as exc:
            self.message_user(request, f"Cache of {len(names)} character(s) and the list invalidated, but not "
                                       f"rebuilt: Redis is unreachable ({exc}). The next reads rebuild it.",
                              messages.WARNING)
            return
        inactive = result.skipped.get(CHARACTER.name, 0)
        self.message_user(
            request,
            f"Rebuilt {result.total_written} cache key(s) from the database: characters:list and "
            f"{len(names) - inactive} of {len(names)} character(s)"
            + (f"; {inactive} inactive, so not cached" if inactive else "") + ".",
            messages.SUCCESS,
        )
