from django.contrib import admin

from .models import PendingInvalidation


@admin.register(PendingInvalidation)
class PendingInvalidationAdmin(admin.ModelAdmin):
    list_display = ("key", "created_at")
    readonly_fields = ("key", "created_at")


def cache_stats_view(request):
    """Staff-only page (wrapped in admin.site.admin_view in config/urls.py): what `cache_stats` prints."""
    from django.template.response import TemplateResponse

    from core.cache.client import CACHE_ERRORS
    from core.cache.ops.stats import stats

    context = {**admin.site.each_context(request), "title": "Cache statistics"}
    try:
        context["stats"] = stats(sample=100)
    except CACHE_ERRORS as exc:  # the page reports an unreachable Redis, it does not fail
        context["error"] = f"Redis is unreachable: {exc}"
    return TemplateResponse(request, "admin/cache_stats.html", context)
