from django.contrib import admin

from .models import PendingInvalidation


@admin.register(PendingInvalidation)
class PendingInvalidationAdmin(admin.ModelAdmin):
    list_display = ("key", "created_at")
    readonly_fields = ("key", "created_at")

    def has_add_permission(self, request):
        return False  # recorded by the cache layer when Redis missed a delete, never by hand


def cache_stats_view(request):
    """Staff-only page (wrapped in admin.site.admin_view in config/urls.py): what `cache_stats` prints."""
    from django.template.response import TemplateResponse

    from core.cache.client import CACHE_ERRORS
    from core.cache.ops.stats import noeviction_with_a_limit, stats

    context = {**admin.site.each_context(request), "title": "Cache statistics"}
    try:
        context["stats"] = stats(sample=100)
    except CACHE_ERRORS as exc:  # the page reports an unreachable Redis, it does not fail
        context["error"] = f"Redis is unreachable: {exc}"
    else:
        context["chart"] = family_chart(context["stats"])
        context["noeviction"] = noeviction_with_a_limit(context["stats"]["redis"])
    return TemplateResponse(request, "admin/cache_stats.html", context)


def family_chart(data: dict) -> list[dict]:
    """Per family: the app's hit ratio and the share of memory, as bar widths in percent (the
    biggest family is the full bar)."""
    biggest = max((row["memory_estimate_bytes"] for row in data["families"].values()), default=0) or 1
    rows = []
    for name, row in data["families"].items():
        ratio = data["app"]["families"].get(name, {}).get("hit_ratio")
        rows.append({"name": name, "memory": row["memory_estimate_bytes"],
                     "memory_pct": round(100 * row["memory_estimate_bytes"] / biggest),
                     "hit_pct": None if ratio is None else round(100 * ratio)})
    return rows
