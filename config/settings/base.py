"""Settings shared by every environment. Everything tunable comes from the environment."""

import os
import secrets
import time
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from core.cache.health import GuardedConnection, GuardedSSLConnection
from core.cache.topology import configure_cache

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False) if (BASE_DIR / ".env").exists() else None


def _fill_from_generated_secrets(path: str) -> None:
    """docker compose on a fresh machine: a random SECRET_KEY and offline webhook secret, created once
    in a volume by whichever process starts first, for the variables the environment leaves empty
    (compose passes an unset ${SECRET_KEY:-} as an empty string)."""
    target = Path(path)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as file:
            file.write(f"SECRET_KEY={secrets.token_urlsafe(50)}\n"
                       f"PAYMENT_OFFLINE_WEBHOOK_SECRET=whsec_generated_{secrets.token_hex(24)}\n")
    for _ in range(50):  # another process may be between creating the file and writing it
        lines = target.read_text().splitlines()
        if len(lines) >= 2:
            break
        time.sleep(0.1)
    for line in lines:
        name, _, value = line.partition("=")
        if name and not os.environ.get(name):
            os.environ[name] = value


if env("GENERATED_SECRETS_FILE", default=""):
    _fill_from_generated_secrets(env("GENERATED_SECRETS_FILE"))

# No published default: production and local settings refuse to start without it (`make run` writes a
# random one into .env); only the test and bench settings have a key of their own.
SECRET_KEY = env("SECRET_KEY", default="")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served from our static files, pinned, no CDN
    "axes",
    "core",
    "accounts",
    "subscriptions",
    "characters",
    "generation",
    "chat",
    "payments",
    "demo",
]

MIDDLEWARE = [
    "core.http.middleware.RequestIdMiddleware",  # first: every later log line carries the request's ID
    "core.http.middleware.CorsMiddleware",  # before anything that may answer (preflight requests)
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # admin's static files under gunicorn
    "core.http.middleware.MetricsMiddleware",
    "core.http.middleware.PrivateByDefaultMiddleware",
    "django.middleware.common.CommonMiddleware",  # host validation
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # A warm cached GET is answered here, without DRF's dispatch or what follows (core.http.lane).
    "core.http.lane.CachedReadLaneMiddleware",
    # The admin's middleware; skipped for /api/ (JWT), see core.http.middleware.AdminOnlyMixin.
    "core.http.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "core.http.middleware.AuthenticationMiddleware",
    "core.http.middleware.MessageMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns an admin lockout into its 429 page
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# With DATABASE_URL unset the service runs on an embedded SQLite file, so `make run` needs nothing.
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
# Persistent connections: a new PostgreSQL connection per request costs more than half the throughput.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite has one writer at a time. A write transaction takes the lock when it begins, waiting
    # for it, rather than failing ("database is locked") at its first write because another
    # worker wrote first; WAL lets reads go on while a write is open.
    for option, value in {"transaction_mode": "IMMEDIATE", "timeout": 20,
                          "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}.items():
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault(option, value)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
# django-axes first: it refuses a locked-out admin login before the password is checked.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Request bodies above this size get a 413/400 before any view runs.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=64 * 1024)

# --- Redis -------------------------------------------------------------------------------------
REDIS_URL = env("REDIS_URL", default="redis://localhost:6379/0")
# Short timeouts: a stalled Redis must cost one timeout, then the circuit breaker skips it.
REDIS_SOCKET_TIMEOUT = env.float("REDIS_SOCKET_TIMEOUT", default=0.25)
REDIS_CONNECT_TIMEOUT = env.float("REDIS_CONNECT_TIMEOUT", default=0.25)

# A deploy-wide prefix in front of every key: the families' (which read in Redis exactly as the
# contract names them) and Django's cache's.
CACHE_NAMESPACE = env("CACHE_NAMESPACE", default="")
CACHES = {
    "default": {
        # A correct Django cache (versions, pickled values) in a key space of its own,
        # <namespace>django:<version>:<key>; the families never pass through it (core/cache/django_cache.py).
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"{CACHE_NAMESPACE}django",
        "REVERSE_KEY_FUNCTION": "core.cache.django_cache.reverse_key",  # keys(), iter_keys()
        "OPTIONS": {
            "CLIENT_CLASS": "core.cache.django_cache.Client",
            "PARSER_CLASS": "redis._parsers.hiredis._HiredisParser",
            "SOCKET_TIMEOUT": REDIS_SOCKET_TIMEOUT,
            "SOCKET_CONNECT_TIMEOUT": REDIS_CONNECT_TIMEOUT,
            "CONNECTION_POOL_KWARGS": {
                # Fails fast while the circuit breaker is open and reports failures to it.
                "connection_class": GuardedSSLConnection if REDIS_URL.startswith("rediss://") else GuardedConnection,
                # Per process. redis-py's default (100) is below what a threaded process needs: each
                # thread keeps one connection for its cached reads and checks out another for leases.
                "max_connections": env.int("REDIS_MAX_CONNECTIONS", default=1000),
            },
            # Throttling and other incidental cache use must never turn a Redis fault into a 500.
            "IGNORE_EXCEPTIONS": True,
        },
    }
}
# The topology: one Redis (REDIS_URL), Redis Cluster, or Redis Sentinel, handed to the cache engine
# once (core/cache/topology.py), which builds caches["default"] for it; nothing else reads these.
# Cluster: the seed nodes (host:port,host:port); REDIS_URL then gives only the scheme and the
# credentials, and keys carry hash tags (README). Sentinel: the sentinels (host:port, comma-separated)
# and the service they monitor; REDIS_URL then gives only the scheme, the primary's credentials and
# the database.
REDIS_CLUSTER_NODES = env.list("REDIS_CLUSTER_NODES", default=[])
REDIS_SENTINELS = env.list("REDIS_SENTINELS", default=[])
REDIS_SENTINEL_SERVICE = env("REDIS_SENTINEL_SERVICE", default="mymaster")
configure_cache(CACHES["default"], cluster_nodes=REDIS_CLUSTER_NODES, sentinels=REDIS_SENTINELS,
                sentinel_service=REDIS_SENTINEL_SERVICE, sentinel_username=env("REDIS_SENTINEL_USERNAME", default=""),
                sentinel_password=env("REDIS_SENTINEL_PASSWORD", default=""),
                sentinel_tls=env.bool("REDIS_SENTINEL_TLS", default=False), namespace=CACHE_NAMESPACE)

DJANGO_REDIS_IGNORE_EXCEPTIONS = True
# Keep connections between requests (django-redis' default, stated: it reads this on every
# request_finished, and a missing setting is a slow lookup each time).
DJANGO_REDIS_CLOSE_CONNECTION = False
# django-redis would log a traceback per ignored error (a flood while Redis is down); the guarded
# connection already logs each failure kind at most every 10 s and counts every one.
DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = False

# TTLs of the key families (seconds): each family declares its default in its app's cache.py (the
# README's key table lists them); CACHE_TTL_<FAMILY> in the environment overrides one.
globals().update({name: env.int(name) for name in os.environ if name.startswith("CACHE_TTL_")})
CHAT_HISTORY_CACHED_MESSAGES = env.int("CHAT_HISTORY_CACHED_MESSAGES", default=100)
# Off only in benchmark baselines (config/settings/bench.py): every read then goes to the database.
CACHE_LAYER_ENABLED = env.bool("CACHE_LAYER_ENABLED", default=True)
# Circuit breaker: how long Redis is skipped after a failure before it is tried again.
CACHE_BREAKER_COOLDOWN = env.float("CACHE_BREAKER_COOLDOWN", default=1.0)
# Recorded (failed) invalidations are also retried in the background after this many seconds,
# backing off up to CACHE_PENDING_RETRY_MAX.
CACHE_PENDING_RETRY = env.float("CACHE_PENDING_RETRY", default=1.0)
CACHE_PENDING_RETRY_MAX = env.float("CACHE_PENDING_RETRY_MAX", default=4.0)
# Every worker learns of invalidations pending anywhere (NOTIFY, and a look at the table every
# CACHE_PENDING_CHECK seconds) from a thread of its own (core/cache/watch.py).
CACHE_PENDING_WATCH = env.bool("CACHE_PENDING_WATCH", default=True)
CACHE_PENDING_CHECK = env.float("CACHE_PENDING_CHECK", default=1.0)
# Each worker keeps the pending keys in memory and bypasses only those; past this many it bypasses
# every key until the table shrinks (the set is then not worth holding).
CACHE_PENDING_KEYS_MAX = env.int("CACHE_PENDING_KEYS_MAX", default=2000)
# "listen": each worker's thread holds a PostgreSQL connection of its own for LISTEN (told at once).
# "poll": no LISTEN, the look every CACHE_PENDING_CHECK seconds alone (PgBouncer transaction pooling).
CACHE_PENDING_NOTIFY = env.str("CACHE_PENDING_NOTIFY", default="listen")
if CACHE_PENDING_NOTIFY not in ("listen", "poll"):
    raise ImproperlyConfigured(f"CACHE_PENDING_NOTIFY must be listen or poll, not {CACHE_PENDING_NOTIFY!r}")
# An invalidation counts as done once this many replicas have it (WAIT); 0 = the primary's word.
CACHE_INVALIDATION_REPLICAS = env.int("CACHE_INVALIDATION_REPLICAS", default=0)
CACHE_INVALIDATION_WAIT_MS = env.int("CACHE_INVALIDATION_WAIT_MS", default=100)
# Single-flight: the lease a loading request holds (extended while it loads, so it only lapses
# when its process died), and the longest a miss waits for that request's value.
CACHE_LEASE_TTL_MS = env.int("CACHE_LEASE_TTL_MS", default=2000)
CACHE_LEASE_WAIT = env.float("CACHE_LEASE_WAIT", default=5.0)
# The near cache (core/cache/near.py): the near families held in each process, evicted by Redis
# tracking. Off in Redis Cluster. Under faults a process serves an entry for at most
# CACHE_NEAR_MAX_SILENCE_MS after it last heard from its tracking connection (PINGed every
# CACHE_NEAR_HEARTBEAT_MS); an entry lives at most CACHE_NEAR_MAX_AGE seconds (or its family's TTL).
CACHE_NEAR_ENABLED = env.bool("CACHE_NEAR_ENABLED", default=True)
CACHE_NEAR_MAX_ENTRIES = env.int("CACHE_NEAR_MAX_ENTRIES", default=10_000)
CACHE_NEAR_MAX_BYTES = env.int("CACHE_NEAR_MAX_BYTES", default=32 * 1024 * 1024)
CACHE_NEAR_MAX_AGE = env.float("CACHE_NEAR_MAX_AGE", default=60.0)
CACHE_NEAR_HEARTBEAT_MS = env.int("CACHE_NEAR_HEARTBEAT_MS", default=200)
CACHE_NEAR_MAX_SILENCE_MS = env.int("CACHE_NEAR_MAX_SILENCE_MS", default=600)

# --- API -------------------------------------------------------------------------------------
# How many reverse proxies stand in front of the app; 0 trusts no X-Forwarded-For (see core/http/throttling.py).
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.CachedJWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["core.http.parsers.JSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "core.http.negotiation.SingleRendererNegotiation",
    "DEFAULT_SCHEMA_CLASS": "core.http.schema.AutoSchema",  # documents the error responses too
    "DEFAULT_PAGINATION_CLASS": "core.http.pagination.Pagination",
    "PAGE_SIZE": 20,
    "EXCEPTION_HANDLER": "core.http.exceptions.exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "auth": env("THROTTLE_AUTH", default="10/min"),
        # Failed logins of one account: from one client address, and from all of them together.
        "login_account": env("THROTTLE_LOGIN_ACCOUNT", default="20/hour"),
        "login_account_total": env("THROTTLE_LOGIN_ACCOUNT_TOTAL", default="100/hour"),
        "refresh": env("THROTTLE_REFRESH", default="60/min"),
        "register": env("THROTTLE_REGISTER", default="10/hour"),
    },
    # Reverse proxies in front of the app whose X-Forwarded-For is trusted (core/http/throttling.py).
    "NUM_PROXIES": TRUSTED_PROXY_COUNT,
    "UNAUTHENTICATED_USER": None,
}

# The admin's login limit (django-axes). The API's logins have their own throttles
# (core/http/throttling.py), so only /admin/ is counted and locked.
AXES_ONLY_ADMIN_SITE = True
AXES_HANDLER = "core.http.throttling.AdminLoginHandler"
# Locked after this many failures of one username from one client address...
AXES_FAILURE_LIMIT = env.int("ADMIN_LOGIN_FAILURE_LIMIT", default=5)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# ... for this long (further failures meanwhile start it again); a success resets the count.
AXES_COOLOFF_TIME = timedelta(minutes=env.int("ADMIN_LOGIN_COOLOFF_MINUTES", default=15))
AXES_RESET_ON_SUCCESS = True
# The same client address as the throttles (TRUSTED_PROXY_COUNT), and the email as the API spells it.
AXES_CLIENT_IP_CALLABLE = "core.http.throttling.admin_client_address"  # an IPv6 client as its /64
AXES_USERNAME_CALLABLE = "core.http.throttling.admin_login_username"
AXES_VERBOSE = False  # no banner on every manage.py run; failures and lockouts are still logged

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("JWT_ACCESS_MINUTES", default=15)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_DAYS", default=7)),
    # Unset: simplejwt signs with the final settings.SECRET_KEY (whichever settings module set it).
    **({"SIGNING_KEY": env("JWT_SIGNING_KEY")} if env("JWT_SIGNING_KEY", default="") else {}),
    "AUTH_HEADER_TYPES": ("Bearer",),
    "UPDATE_LAST_LOGIN": False,
}

# Validated access tokens each process remembers (by the raw token, until its exp): a repeat
# request skips the JWT decode (~120 us). 0 turns it off. Revocation is checked on every request
# regardless. An entry measures ~1.3 KB (the 277-byte token, its decoded claims, the LRU node), so
# 32,768 entries are ~42 MB per worker: every token alive in one 15-minute lifetime of ~30,000
# users, the peak quarter hour of about 1M daily users (10% of them in the peak hour). Behind a
# load balancer each worker sees nearly every active user; the jwt_validation_cache_total
# counters in /metrics show whether the size holds them.
JWT_VALIDATED_CACHE_SIZE = env.int("JWT_VALIDATED_CACHE_SIZE", default=32768)
# Warm cached GETs skip DRF's dispatch (core.http.lane); off, every request takes the full path.
CACHED_READ_LANE = env.bool("CACHED_READ_LANE", default=True)

SPECTACULAR_SETTINGS = {
    "TITLE": "Character chat and art generation API",
    "DESCRIPTION": "Subscriptions, coins, characters, chat and image generation; hot reads served from Redis.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"ImageSize": "generation.models.SIZES"},
    # ImageSize lists only the sizes the generation settings accept now (generation/schema.py).
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "generation.schema.image_sizes_as_configured"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # /api/schema and /api/docs: public, or (API_DOCS_PUBLIC=false) staff only, by a staff user's token.
    "SERVE_PERMISSIONS": ["core.http.permissions.ApiDocsAccess"],
    "SERVE_AUTHENTICATION": ["accounts.authentication.CachedJWTAuthentication"],
}

# Request IDs: returned in this response header, and accepted from it when the request comes
# through a proxy that sets it (nginx's $request_id); otherwise generated.
REQUEST_ID_HEADER = env("REQUEST_ID_HEADER", default="X-Request-ID")
REQUEST_ID_TRUST_INCOMING = env.bool("REQUEST_ID_TRUST_INCOMING", default=True)

# CORS, for a browser front end on another origin: off unless origins are listed
# (e.g. https://app.example.com). Only the API; tokens travel in a header, so no credentials.
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
CORS_URLS_REGEX = r"^/api/.*$"
# Spelled out, not left to defaults: core.http.middleware.CorsMiddleware reads them on every request to
# decide whether CORS is on, and a missing setting is a slow lookup each time.
CORS_ALLOWED_ORIGIN_REGEXES: list[str] = []
CORS_ALLOW_ALL_ORIGINS = False
CORS_EXPOSE_HEADERS = ["ETag", REQUEST_ID_HEADER]

# Whether anyone may read /api/schema and /api/docs; false leaves them to staff (production's default).
API_DOCS_PUBLIC = env.bool("API_DOCS_PUBLIC", default=True)

# --- Domain ----------------------------------------------------------------------------------
GENERATION_BACKEND = env("GENERATION_BACKEND", default="generation.backends.PlaceholderBackend")
CHAT_RESPONDER = env("CHAT_RESPONDER", default="chat.responders.PersonaResponder")
CHAT_MAX_MESSAGE_LENGTH = env.int("CHAT_MAX_MESSAGE_LENGTH", default=4000)
SUBSCRIPTION_PERIOD_DAYS = env.int("SUBSCRIPTION_PERIOD_DAYS", default=30)

# --- Jobs (Celery) ---------------------------------------------------------------------------
# Generations and chat replies run on Celery workers, never in a web worker. The broker is Redis
# (REDIS_URL unless CELERY_BROKER_URL names another, e.g. a noeviction Redis of its own), its keys
# under <namespace>celery: so they never mix with the cache's. The database row is each job's
# durable record (a pending generation, a chat message waiting for its reply): a message lost by
# the broker is re-sent by the sweep, so nothing acknowledged depends on Redis keeping it.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="") or REDIS_URL
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "global_keyprefix": f"{CACHE_NAMESPACE}celery:",
    # A message taken by a worker that died (kill -9, a lost host) is delivered again after this
    # many seconds; longer than any job may run (the provider's timeout times its tries).
    "visibility_timeout": env.int("JOB_VISIBILITY_TIMEOUT", default=900),
    # How often a worker looks for such messages (kombu's default scans every 100 s).
    "unacked_restore_interval": env.int("JOB_RESTORE_EVERY", default=10),
    "unacked_restore_throttle": 1,
    # A request that queues a job must not hang on a stalled broker (the sweep re-sends what failed).
    "socket_timeout": env.float("JOB_BROKER_TIMEOUT", default=2.0),
    "socket_connect_timeout": env.float("JOB_BROKER_TIMEOUT", default=2.0),
}
if env("CELERY_BROKER_SENTINEL_MASTER", default=""):  # CELERY_BROKER_URL=sentinel://host:26379;sentinel://...
    CELERY_BROKER_TRANSPORT_OPTIONS["master_name"] = env("CELERY_BROKER_SENTINEL_MASTER")
# One quick reconnect (a pooled connection a broker restart left dead), then give up; after a failure a
# process does not try again for JOB_BROKER_COOLDOWN seconds (core.jobs.enqueue).
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0, "interval_max": 0}
JOB_BROKER_COOLDOWN = env.float("JOB_BROKER_COOLDOWN", default=5.0)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True  # the database holds every outcome; no result backend
CELERY_TASK_ACKS_LATE = True  # acknowledged when done: a worker killed mid-job leaves it to another
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # a slow job does not hold others hostage in one worker
CELERY_TASK_SERIALIZER = CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_HIJACK_ROOT_LOGGER = False  # LOGGING below stays in charge
CELERY_WORKER_SEND_TASK_EVENTS = False
# Celery's Django fixup closes the database connection before and after every job unless this is
# set: a new PostgreSQL connection per job, about 40% of a busy worker's Python time in a profile.
# With it the fixup closes one only every 2 x this many jobs; config/celery.py closes a connection
# past CONN_MAX_AGE or broken around each job, as Django does around a request.
CELERY_DB_REUSE_MAX = env.int("JOB_DB_REUSE_MAX", default=1000)
# Image jobs (5-60 s each) and chat replies (1-20 s) wait in queues of their own, so a burst of
# one never delays the other; a worker takes all three unless told (-Q) otherwise.
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {"generation.tasks.render": {"queue": "generations"}, "chat.tasks.reply": {"queue": "chat"}}
JOB_QUEUES = ("generations", "chat", "default")
# Tests run jobs in-process (test settings) except the ones that start a real worker.
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# False: an eager retry runs the next try (core.jobs.enqueue raises what the last one raised).
CELERY_TASK_EAGER_PROPAGATES = False
# A worker's own /metrics (jobs_total, job_latency_seconds, jobs_queue_depth) on this port, for a
# host or container without gunicorn's /metrics beside it; 0: off (make run's worker writes into
# gunicorn's metrics directory instead).
JOB_METRICS_PORT = env.int("JOB_METRICS_PORT", default=0)
JOB_METRICS_ADDR = env("JOB_METRICS_ADDR", default="127.0.0.1")
# Provider errors are retried this many times, after 2, 4, 8 ... seconds (at most JOB_RETRY_MAX_DELAY).
JOB_MAX_RETRIES = env.int("JOB_MAX_RETRIES", default=3)
JOB_RETRY_DELAY = env.float("JOB_RETRY_DELAY", default=2.0)
JOB_RETRY_MAX_DELAY = env.float("JOB_RETRY_MAX_DELAY", default=60.0)
# A generation a worker took and has not finished in this many seconds is given to another (its
# worker is presumed dead); a pending one not taken in GENERATION_REQUEUE_AFTER is sent again.
GENERATION_JOB_LEASE = env.int("GENERATION_JOB_LEASE", default=600)
GENERATION_REQUEUE_AFTER = env.int("GENERATION_REQUEUE_AFTER", default=120)
# Given up on after this many minutes: failed, coins and daily use given back (generations_fail_stale).
GENERATION_STALE_MINUTES = env.int("GENERATION_STALE_MINUTES", default=30)
# Chat replies: a user message still without its reply after CHAT_REPLY_REQUEUE_AFTER seconds is
# sent again; after CHAT_REPLY_GIVE_UP_AFTER it gets the placeholder answer.
CHAT_REPLY_REQUEUE_AFTER = env.int("CHAT_REPLY_REQUEUE_AFTER", default=120)
CHAT_REPLY_GIVE_UP_AFTER = env.int("CHAT_REPLY_GIVE_UP_AFTER", default=1800)
# Periodic work, run by `celery beat` (one per deployment).
CELERY_BEAT_SCHEDULE = {
    "subscriptions-renew": {"task": "payments.tasks.renewals", "schedule": env.float("RENEWALS_EVERY", default=600)},
    "jobs-sweep": {"task": "generation.tasks.sweep", "schedule": env.float("JOBS_SWEEP_EVERY", default=30)},
    "chat-replies-sweep": {"task": "chat.tasks.sweep", "schedule": env.float("JOBS_SWEEP_EVERY", default=30)},
    "cache-warm-active": {"task": "core.jobs.tasks.cache_warm_active",
                          "schedule": env.float("CACHE_WARM_EVERY", default=300)},
}
# The warm-up follows activity: per-user keys of users active in the last CACHE_WARM_ACTIVE_DAYS days.
CACHE_WARM_ACTIVE_DAYS = env.int("CACHE_WARM_ACTIVE_DAYS", default=1)
CELERY_BEAT_SCHEDULE_FILENAME = env("CELERY_BEAT_SCHEDULE_FILENAME", default=str(VAR_DIR / "celerybeat-schedule"))

# --- Model providers (OpenAI-compatible: OpenAI, vLLM, Ollama, LM Studio ...) ------------------
# GENERATION_BACKEND=generation.backends.OpenAIImageBackend and
# CHAT_RESPONDER=chat.responders.OpenAIResponder use them; the SDK reads OPENAI_BASE_URL and
# OPENAI_API_KEY itself (unset base URL: api.openai.com).
OPENAI_BASE_URL = env("OPENAI_BASE_URL", default="") or None
OPENAI_API_KEY = env("OPENAI_API_KEY", default="")
OPENAI_CHAT_MODEL = env("OPENAI_CHAT_MODEL", default="gpt-4o-mini")
OPENAI_IMAGE_MODEL = env("OPENAI_IMAGE_MODEL", default="gpt-image-2.5-flare")
OPENAI_CHAT_TIMEOUT = env.float("OPENAI_CHAT_TIMEOUT", default=60.0)
OPENAI_IMAGE_TIMEOUT = env.float("OPENAI_IMAGE_TIMEOUT", default=180.0)
OPENAI_CHAT_MAX_TOKENS = env.int("OPENAI_CHAT_MAX_TOKENS", default=512)
# Messages of the cached history sent as context (newest last).
OPENAI_CHAT_CONTEXT_MESSAGES = env.int("OPENAI_CHAT_CONTEXT_MESSAGES", default=20)

# --- Payments (payments/providers) -----------------------------------------------------------
# offline: a local checkout that confirms or declines (make run, tests, bench); stripe: real money.
PAYMENT_PROVIDER = env("PAYMENT_PROVIDER", default="offline")
PAYMENT_CURRENCY = env("PAYMENT_CURRENCY", default="usd")
# A failed renewal charge: access goes on this many days (past due), retried every so many hours.
PAYMENT_GRACE_DAYS = env.int("PAYMENT_GRACE_DAYS", default=3)
PAYMENT_RETRY_HOURS = env.int("PAYMENT_RETRY_HOURS", default=24)
# Signs the offline provider's events (Stripe's scheme). No published default: `make run` writes a
# random one into .env; without one the offline provider does not start (system check payments.E007).
PAYMENT_OFFLINE_WEBHOOK_SECRET = env("PAYMENT_OFFLINE_WEBHOOK_SECRET", default="")
STRIPE_SECRET_KEY = env("STRIPE_SECRET_KEY", default="")
STRIPE_WEBHOOK_SECRET = env("STRIPE_WEBHOOK_SECRET", default="")
# Where Stripe's checkout sends the user back (your front end's pages).
PAYMENT_SUCCESS_URL = env("PAYMENT_SUCCESS_URL", default="http://localhost:8000/?checkout=success")
PAYMENT_CANCEL_URL = env("PAYMENT_CANCEL_URL", default="http://localhost:8000/?checkout=cancelled")

# Prometheus metrics at /metrics: only from these addresses unless a token is configured.
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=["127.0.0.1", "::1"])
METRICS_TOKEN = env("METRICS_TOKEN", default="")

LOG_FORMAT = env("LOG_FORMAT", default="plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "core.http.request_id.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        # One JSON object per line, for log shippers.
        "json": {"()": "pythonjsonlogger.json.JsonFormatter",
                 "format": "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["request_id"]}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    # Django's default logging gives "django" a console handler of its own (active with DEBUG); its
    # records also reach the root handler, so every django.request line came out twice.
    "loggers": {"django": {"handlers": [], "propagate": True}},
}

# Error tracking (core/http/sentry.py): nothing is sent unless SENTRY_DSN is set.
SENTRY_DSN = env("SENTRY_DSN", default="")
if SENTRY_DSN:
    from core.http import sentry

    sentry.start(dsn=SENTRY_DSN, environment=env("SENTRY_ENVIRONMENT", default=""),
                 release=env("SENTRY_RELEASE", default=""),
                 traces_sample_rate=env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0))
