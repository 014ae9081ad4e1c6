"""Who a client is for rate limits (the API's throttles and the admin's lockout), the
per-account login limit, and django-axes' admin-only handler.

The client address follows DRF's NUM_PROXIES, set from TRUSTED_PROXY_COUNT: 0 (the default) trusts
no forwarded header, so a client cannot pick its own bucket by sending X-Forwarded-For; with N
proxies in front, the address the outermost of them saw (the N-th entry from the right).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from axes.handlers.database import AxesDatabaseHandler
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle

from core.cache.keys import normalize_email


def client_ip(request) -> str:
    """The client address of a Django or DRF request (also AXES_CLIENT_IP_CALLABLE)."""
    return BaseThrottle().get_ident(request)


class AccountLoginThrottle(SimpleRateThrottle):
    """Failed logins per account (the normalised email), from any address.

    Only failures count (the view records them), so a user who logs in often is never limited;
    once the limit is reached every attempt on that account is refused, the right password
    included, until failures age out of the window: rotating addresses does not buy more guesses,
    and other accounts are not affected.
    """

    scope = "login_account"

    def get_cache_key(self, request, view):
        data = request.data
        email = data.get("email") if isinstance(data, Mapping) else None
        if not isinstance(email, str) or not email.strip():
            return None  # the serializer refuses it; nothing to count
        # Hashed: any input makes a short key of its own.
        digest = hashlib.sha256(normalize_email(email).encode()).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": digest}

    def _load(self, request, view) -> bool:
        self.key = self.get_cache_key(request, view)
        if self.rate is None or self.key is None:
            return False
        self.history = self.cache.get(self.key, [])
        self.now = self.timer()
        while self.history and self.history[-1] <= self.now - self.duration:
            self.history.pop()
        return True

    def allow_request(self, request, view) -> bool:
        if not self._load(request, view):
            return True
        return len(self.history) < self.num_requests or self.throttle_failure()

    def record_failure(self, request, view) -> None:
        if self._load(request, view):
            self.throttle_success()  # appends now and stores the history


def admin_login_username(request, credentials: dict | None) -> str:
    """AXES_USERNAME_CALLABLE: the admin form's username (an email), normalised like the API's."""
    raw = (credentials or {}).get("username") or request.POST.get("username") or ""
    return normalize_email(raw) if isinstance(raw, str) else ""


class AdminLoginHandler(AxesDatabaseHandler):
    """django-axes for the admin's login only. With AXES_ONLY_ADMIN_SITE axes never locks an API
    login, but it would still write a row for every failed one: those are the throttles' business."""

    def user_login_failed(self, sender, credentials: dict, request=None, **kwargs):
        if request is not None and self.is_admin_request(request):
            super().user_login_failed(sender, credentials, request, **kwargs)
