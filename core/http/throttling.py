"""Who a client is for rate limits (the API's throttles and the admin's lockout), the
per-account login limit, and django-axes' admin-only handler.

The client address follows DRF's NUM_PROXIES, set from TRUSTED_PROXY_COUNT: 0 (the default) trusts
no forwarded header, so a client cannot pick its own bucket by sending X-Forwarded-For; with N
proxies in front, the address the outermost of them saw (the N-th entry from the right). For the
API's throttles an IPv6 address counts as its /64: one host or site normally holds the whole prefix,
so walking through it buys no new bucket, as rotating X-Forwarded-For no longer does.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping

from axes.handlers.database import AxesDatabaseHandler
from rest_framework.throttling import BaseThrottle, ScopedRateThrottle, SimpleRateThrottle

from core.cache.api import normalize_email


def client_ip(request) -> str:
    """The client address of a Django or DRF request (also AXES_CLIENT_IP_CALLABLE)."""
    return BaseThrottle().get_ident(request)


def client_ident(request) -> str:
    """Whom the API's throttles count: the client address, an IPv6 one as its /64 ("" when the
    server gave none, e.g. over a Unix socket)."""
    ident = client_ip(request) or ""
    try:
        address = ipaddress.ip_address(ident)
    except ValueError:
        return ident
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return ident


class AddressRateThrottle(ScopedRateThrottle):
    """DRF's ScopedRateThrottle (``throttle_scope`` per view), counted per ``client_ident``."""

    def get_ident(self, request) -> str:
        return client_ident(request)


class _AccountFailures(SimpleRateThrottle):
    """One window of failed logins of an account (the normalised email, hashed: any input makes a
    short key of its own), from one client (``per_client``) or from all together. Only failures
    count (the view records them), so a user who logs in often is never limited."""

    per_client = False

    def get_cache_key(self, request, view):
        data = request.data
        email = data.get("email") if isinstance(data, Mapping) else None
        if not isinstance(email, str) or not email.strip():
            return None  # the serializer refuses it; nothing to count
        ident = normalize_email(email)
        if self.per_client:
            ident += "\n" + client_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": hashlib.sha256(ident.encode()).hexdigest()}

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


class _AccountFailuresFromClient(_AccountFailures):
    scope = "login_account"
    per_client = True


class _AccountFailuresInTotal(_AccountFailures):
    scope = "login_account_total"


class AccountLoginThrottle(BaseThrottle):
    """Failed logins per account, so guessing one account's password stays slow whatever the
    addresses, without letting one client lock others out.

    ``login_account`` counts one account's failures from one client (address, IPv6 /64): once
    reached, that client's logins to that account get 429 (the right password too), and no one
    else's. ``login_account_total`` counts them from all clients together, and is higher: only
    many clients together can reach it (then every login to the account waits, the owner's too).
    Other accounts are never affected.
    """

    def __init__(self) -> None:
        self.windows = (_AccountFailuresFromClient(), _AccountFailuresInTotal())
        self._wait: float | None = None

    def allow_request(self, request, view) -> bool:
        waits = [window.wait() for window in self.windows if not window.allow_request(request, view)]
        self._wait = max((w for w in waits if w is not None), default=None)
        return not waits

    def wait(self) -> float | None:
        return self._wait

    def record_failure(self, request, view) -> None:
        for window in self.windows:
            window.record_failure(request, view)


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
