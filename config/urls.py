from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path, register_converter
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from accounts import apis as accounts
from characters import apis as characters
from chat import apis as chat
from core import admin as core_admin
from core.http import apis as core
from generation import apis as generation
from payments import apis as payments
from subscriptions import apis as subscriptions


class SessionIdConverter:
    """Client-chosen chat session ids: 1-64 of letters, digits, '-' and '_'."""

    regex = r"[A-Za-z0-9_-]{1,64}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(SessionIdConverter, "session")

api = [
    path("auth/register", accounts.RegisterApi.as_view(), name="register"),
    path("auth/token", accounts.TokenApi.as_view(), name="token"),
    path("auth/token/refresh", accounts.TokenRefreshApi.as_view(), name="token-refresh"),
    path("auth/logout", accounts.LogoutApi.as_view(), name="logout"),
    path("auth/logout/all", accounts.LogoutAllApi.as_view(), name="logout-all"),
    path("me", accounts.MeApi.as_view(), name="me"),
    path("me/password", accounts.PasswordApi.as_view(), name="password"),
    path("me/coins", accounts.CoinsApi.as_view(), name="coins"),
    path("me/coins/history", accounts.CoinHistoryApi.as_view(), name="coins-history"),
    path("plans", subscriptions.PlanListApi.as_view(), name="plans"),
    path("subscription", payments.SubscriptionApi.as_view(), name="subscription"),
    path("subscription/stats", subscriptions.SubscriptionStatsApi.as_view(), name="subscription-stats"),
    path("subscription/cancel", subscriptions.SubscriptionCancelApi.as_view(), name="subscription-cancel"),
    path("payments/webhook/<slug:provider>", payments.WebhookApi.as_view(), name="payments-webhook"),
    path("payments/offline/checkout/<slug:ref>", payments.OfflineCheckoutApi.as_view(), name="payments-offline-checkout"),
    path("characters", characters.CharacterListApi.as_view(), name="characters"),
    path("characters/<slug:name>", characters.CharacterDetailApi.as_view(), name="character"),
    path("generation/settings", generation.GenerationSettingsApi.as_view(), name="generation-settings"),
    path("generations", generation.GenerationApi.as_view(), name="generations"),
    path("generations/<int:generation_id>", generation.GenerationDetailApi.as_view(), name="generation"),
    path("chat/<slug:character>/sessions", chat.ChatSessionListApi.as_view(), name="chat-sessions"),
    path(
        "chat/<slug:character>/sessions/<session:session>/messages",
        chat.ChatMessagesApi.as_view(),
        name="chat-messages",
    ),
    path("health", core.HealthApi.as_view(), name="health"),
    path("health/live", core.LivenessApi.as_view(), name="health-live"),
    path("health/ready", core.HealthApi.as_view(), name="health-ready"),
    path("schema", SpectacularAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    # Last: any other /api/ path is a JSON 404 in every mode (DEBUG's HTML page is for humans).
    re_path(r"^.*$", core.api_not_found, name="api-not-found"),
]

# The admin's "View site" link: the API's docs where they are public; no link otherwise (there is
# no site at /).
admin.site.site_url = "/api/docs" if settings.API_DOCS_PUBLIC else None

urlpatterns = [
    path("api/", include(api)),
    path("favicon.ico", core.favicon, name="favicon"),
    path("metrics", core.metrics_view, name="metrics"),
    # Before admin.site.urls, whose catch-all would answer first; admin_view makes it staff-only.
    path("admin/cache-stats/", admin.site.admin_view(core_admin.cache_stats_view), name="admin-cache-stats"),
    path("admin/", admin.site.urls),
]

handler400 = "core.http.apis.json_bad_request"
handler404 = "core.http.apis.json_not_found"
handler500 = "core.http.apis.json_server_error"
