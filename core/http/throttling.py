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
import secrets
import time
from collections.abc import Mapping

from axes.handlers.database import AxesDatabaseHandler
from django.core import signing
from django.core.cache import cache
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


LOGIN_KNOWN_CLIENT_TTL = 30 * 24 * 3600  # a client the owner logged in from stays known this long


def _login_rate(scope: str) -> tuple[int, int] | None:
    """(limit, seconds) of a login scope, from the same rates as DRF's throttles (THROTTLE_*)."""
    rate = SimpleRateThrottle.THROTTLE_RATES.get(scope)
    if not rate:
        return None
    # DRF's own parsing ("20/hour"); the instance is never used beyond that.
    limit, seconds = SimpleRateThrottle.parse_rate(SimpleRateThrottle.__new__(SimpleRateThrottle), rate)
    return limit, seconds


def _hashed(*parts: str) -> str:
    """Any input makes a short key of its own."""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _window_key(scope: str, ident: str, seconds: int) -> tuple[str, float]:
    """The counter of the current fixed window, and the seconds until it ends."""
    now = time.time()
    return f"throttle_{scope}_{ident}_{int(now // seconds)}", seconds - now % seconds


def _count(key: str, seconds: int, delta: int = 1) -> int | None:
    """Add to a window's counter atomically (``add`` then ``incr``: Redis INCRBY, so concurrent
    failures all count); None when the cache cannot count (Redis down: logins are not refused)."""
    for _ in range(2):
        cache.add(key, 0, timeout=seconds + 1)
        try:
            return cache.incr(key, delta)
        except ValueError:  # expired between the two calls
            continue
    return None


def _uncount(key: str) -> None:
    try:
        cache.decr(key)
    except ValueError:  # the window is over: nothing to give back
        pass


def login_client_known(*, email: str, client: str) -> bool:
    """Whether the account's owner logged in successfully from this client (address, IPv6 /64)."""
    return bool(cache.get(f"login_known_{_hashed(normalize_email(email), client)}"))


def login_client_remember(*, email: str, client: str) -> None:
    cache.set(f"login_known_{_hashed(normalize_email(email), client)}", 1, timeout=LOGIN_KNOWN_CLIENT_TTL)


LOGIN_DEVICE_HEADER = "Login-Device"
LOGIN_DEVICE_SALT = "core.http.throttling.login_device"
LOGIN_DEVICE_MAX_LENGTH = 200


def login_device_issue(*, email: str) -> str:
    """A device token for a successful login: the owner's app sends it back (``Login-Device``) on
    later logins, so it is a known client wherever it connects from next (30 days)."""
    return signing.dumps([_hashed(normalize_email(email)), secrets.token_urlsafe(12)], salt=LOGIN_DEVICE_SALT)


def login_device_id(*, email: str, token) -> str | None:
    """The device a token of this account names; None for anything else (forged, expired, another
    account's, not a token at all)."""
    if not isinstance(token, str) or not token or len(token) > LOGIN_DEVICE_MAX_LENGTH:
        return None
    try:
        account, device = signing.loads(token, salt=LOGIN_DEVICE_SALT, max_age=LOGIN_KNOWN_CLIENT_TTL)
    except (signing.BadSignature, ValueError, TypeError):
        return None
    if account != _hashed(normalize_email(email)) or not isinstance(device, str):
        return None
    return device


class LoginAttempt:
    """One login to one account from one client, counted as a failure before its password is
    checked (so concurrent guesses cannot all pass a check that none has counted yet) and given
    back when it succeeds or is never checked.

    ``login_account`` limits one account's failures from one client: that client then waits for
    that account, the right password too, and no one else does. ``login_account_total`` limits
    the account's failures from all clients the owner never logged in from (known clients,
    remembered for 30 days after a successful login, neither count nor wait): rotating addresses
    buys no more guesses than the total, and a stranger reaching it cannot lock the owner out of
    the clients they use. The owner's device token (``login_device_issue``) makes any address a
    known client; its failures count on their own instead (``login_account`` per device), so a
    stolen token buys one client's guesses. Only a new device on a new network waits for the window.
    """

    def __init__(self, *, email: str, client: str, device: str | None = None) -> None:
        self.email, self.client, self.device = normalize_email(email), client, device
        self.taken: list[str] = []
        self.wait: float | None = None

    def _windows(self):
        yield "login_account", _hashed(self.email, self.client)
        if login_client_known(email=self.email, client=self.client):
            return
        device = login_device_id(email=self.email, token=self.device)
        if device is not None:
            yield "login_account", _hashed(self.email, "device", device)
        else:
            yield "login_account_total", _hashed(self.email)

    def begin(self) -> bool:
        """Count this attempt in each window; False (and nothing counted) when one is full."""
        for scope, ident in self._windows():
            rate = _login_rate(scope)
            if rate is None:
                continue
            limit, seconds = rate
            key, remaining = _window_key(scope, ident, seconds)
            count = _count(key, seconds)
            if count is None:
                continue
            self.taken.append(key)
            if count > limit:
                self.abandon()
                self.wait = remaining
                return False
        return True

    def failed(self) -> None:
        self.taken = []  # counted already

    def succeeded(self) -> None:
        self.abandon()
        login_client_remember(email=self.email, client=self.client)

    def abandon(self) -> None:
        for key in self.taken:
            _uncount(key)
        self.taken = []


def login_account_total_reached(*, email: str, client: str) -> bool:
    """The admin's side of the same total: whether failures of the account from unknown clients
    have reached ``login_account_total`` (a known client is never held by it)."""
    rate = _login_rate("login_account_total")
    if rate is None or login_client_known(email=email, client=client):
        return False
    limit, seconds = rate
    key, _ = _window_key("login_account_total", _hashed(normalize_email(email)), seconds)
    return (cache.get(key) or 0) >= limit


def login_failure_record(*, email: str, client: str) -> None:
    """An admin login failure counts in the account's total too (unless from a known client)."""
    rate = _login_rate("login_account_total")
    if rate is None or login_client_known(email=email, client=client):
        return
    key, _ = _window_key("login_account_total", _hashed(normalize_email(email)), rate[1])
    _count(key, rate[1])


class AccountLoginThrottle(BaseThrottle):
    """The DRF side of LoginAttempt: ``allow_request`` begins the attempt and leaves it on the
    request (``request.login_attempt``) for the view to say how it ended."""

    def __init__(self) -> None:
        self._wait: float | None = None

    def allow_request(self, request, view) -> bool:
        data = request.data
        email = data.get("email") if isinstance(data, Mapping) else None
        if not isinstance(email, str) or not email.strip():
            return True  # the serializer refuses it; nothing to count
        attempt = LoginAttempt(email=email, client=client_ident(request),
                               device=request.headers.get(LOGIN_DEVICE_HEADER))
        if not attempt.begin():
            self._wait = attempt.wait
            return False
        request.login_attempt = attempt
        return True

    def wait(self) -> float | None:
        return self._wait


def admin_client_address(request) -> str:
    """AXES_CLIENT_IP_CALLABLE: the client address, an IPv6 one as the first address of its /64, so
    walking through the prefix buys no new admin lockout count (an address, so axes can store it)."""
    ident = client_ident(request)
    if ident.endswith("/64"):
        return ident[: -len("/64")]
    return ident


def admin_login_username(request, credentials: dict | None) -> str:
    """AXES_USERNAME_CALLABLE: the admin form's username (an email), normalised like the API's."""
    raw = (credentials or {}).get("username") or request.POST.get("username") or ""
    return normalize_email(raw) if isinstance(raw, str) else ""


class AdminLoginHandler(AxesDatabaseHandler):
    """django-axes for the admin's login only. With AXES_ONLY_ADMIN_SITE axes never locks an API
    login, but it would still write a row for every failed one: those are the throttles' business.

    Axes locks a username from one client (its /64 for IPv6); on top, the admin shares the API's
    per-account total (``login_account_total``, failures from clients the owner never logged in
    from), so many addresses with a few failures each lock strangers out, never the owner's own."""

    def is_locked(self, request, credentials: dict | None = None) -> bool:
        if super().is_locked(request, credentials):
            return True
        email = admin_login_username(request, credentials)
        return bool(email) and login_account_total_reached(email=email, client=client_ident(request))

    def user_login_failed(self, sender, credentials: dict, request=None, **kwargs):
        if request is not None and self.is_admin_request(request):
            email = admin_login_username(request, credentials)
            client = client_ident(request)
            refused = bool(email) and login_account_total_reached(email=email, client=client)
            super().user_login_failed(sender, credentials, request, **kwargs)
            if refused:  # is_locked refused it for the total: axes' middleware answers with its lockout
                request.axes_locked_out = True
            elif email:
                login_failure_record(email=email, client=client)

    def user_logged_in(self, sender, request, user, **kwargs):
        super().user_logged_in(sender, request, user, **kwargs)
        if request is not None and self.is_admin_request(request):
            login_client_remember(email=user.email, client=client_ident(request))
