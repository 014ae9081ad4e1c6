"""Production settings: refuse to start without a secret, secure cookies and HTTPS."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import SIMPLE_JWT, env

SECRET_KEY = env("SECRET_KEY")  # no default: ImproperlyConfigured when missing
DEBUG = False
# The JWT key follows this secret unless JWT_SIGNING_KEY names another.
SIMPLE_JWT = {**SIMPLE_JWT, "SIGNING_KEY": env("JWT_SIGNING_KEY", default=SECRET_KEY)}
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
API_DOCS_PUBLIC = env.bool("API_DOCS_PUBLIC", default=False)

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
# Health probes come over plain HTTP from inside the host or cluster: answer them, do not redirect.
SECURE_REDIRECT_EXEMPT = [r"^api/health(/|$)"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# Real money needs a real provider: with the offline one anyone holding a checkout URL "pays".
PAYMENT_PROVIDER = env("PAYMENT_PROVIDER", default="stripe")
if PAYMENT_PROVIDER == "offline" and not env.bool("PAYMENT_OFFLINE_ALLOWED", default=False):
    raise ImproperlyConfigured("PAYMENT_PROVIDER=offline takes no real payments; set PAYMENT_OFFLINE_ALLOWED=true "
                               "only for a trial that must not take money")
# Whoever knows the offline provider's secret can sign any user's payment or refund: never a published one.
PAYMENT_OFFLINE_WEBHOOK_SECRET = env("PAYMENT_OFFLINE_WEBHOOK_SECRET", default="")
if PAYMENT_PROVIDER == "offline" and (
    len(PAYMENT_OFFLINE_WEBHOOK_SECRET) < 32
    or PAYMENT_OFFLINE_WEBHOOK_SECRET.startswith(("whsec_offline_development_only", "whsec_offline_test_only",
                                                  "whsec_offline_bench_only"))
):
    raise ImproperlyConfigured("PAYMENT_PROVIDER=offline needs a random PAYMENT_OFFLINE_WEBHOOK_SECRET of 32 characters "
                               "or more, e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))'")
