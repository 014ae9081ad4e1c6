"""Prometheus metrics. Under gunicorn every worker writes them into PROMETHEUS_MULTIPROC_DIR
(config/gunicorn.conf.py sets it) and a scrape sums them; manage.py commands count in their own
process and only read that directory (as METRICS_WORKERS_DIR, see manage.py)."""

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess, values

_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


def _process_id() -> int:
    return _pid


if values.ValueClass is not values.MutexValue:
    # Multiprocess mode: each increment asks for the process id, to notice a fork. A getpid()
    # system call per increment (several per request); the id kept here, renewed in a forked
    # child, is as unique per process.
    os.register_at_fork(after_in_child=_forked)
    values.ValueClass = values.MultiProcessValue(process_identifier=_process_id)

cache_requests = Counter(
    "cache_requests_total", "Cached reads by key family and result (hit, miss, bypass, error).",
    ["family", "result"],
)
cache_invalidations = Counter(
    "cache_invalidations_total", "Invalidated keys by family and outcome (deleted, deferred, amended: a write stored its new value).",
    ["family", "result"],
)
cache_errors = Counter("cache_errors_total", "Redis failures that the app ignored.", ["operation"])
# "livemax": a worker that died (mark_process_dead in gunicorn's child_exit) no longer counts.
# node: "" for the process's breaker (one Redis, Sentinel, or a cluster that cannot be reached at
# all), host:port of the primary in cluster mode, where each node has its own breaker.
breaker_open = Gauge("cache_breaker_open", "1 while some process skips Redis (or that cluster node).", ["node"],
                     multiprocess_mode="livemax")
# Per process, the validated-token memory of accounts.authentication: its hit rate says whether
# JWT_VALIDATED_CACHE_SIZE holds the tokens in use (a miss decodes and checks the signature again).
jwt_validation_cache = Counter(
    "jwt_validation_cache_total", "Access tokens found in the validated-token memory (hit) or decoded again (miss).",
    ["result"],
)
# Rows in the pending-invalidation table, as each worker's watcher last counted them (its periodic
# look, never a request): one table for the whole deployment, so the freshest count is the answer.
pending_keys = Gauge("cache_pending_keys", "Keys whose delete is pending (recorded, not yet applied to Redis).",
                     multiprocess_mode="livemostrecent")
request_latency = Histogram(
    "http_request_duration_seconds", "Request latency by method, status class and route (URL pattern).",
    ["method", "status", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

# The near cache (core/cache/near.py): hits served in process (also counted as hits above), and
# how often a process emptied it (tracking lost or re-established, Redis changed, a server flush).
near_hits = Counter("cache_near_hits_total", "Cached reads served from the process's near cache, by key family.",
                    ["family"])
near_flushes = Counter("cache_near_flushes_total", "Times a process emptied its near cache, by reason.", ["reason"])

_RESULTS = ("hit", "miss", "bypass", "error")


class FamilyCounters:
    """Pre-bound label children: a hit costs one increment, not a label lookup."""

    def __init__(self, family: str) -> None:
        self.hit, self.miss, self.bypass, self.error = (
            cache_requests.labels(family=family, result=result) for result in _RESULTS)
        self.deleted = cache_invalidations.labels(family=family, result="deleted")
        self.deferred = cache_invalidations.labels(family=family, result="deferred")
        self.amended = cache_invalidations.labels(family=family, result="amended")
        self.near_hit = near_hits.labels(family=family)


def workers_dir() -> str | None:
    """The directory the gunicorn workers write their metrics to, if there is one."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("METRICS_WORKERS_DIR") or None


_AT_SCRAPE: list = []  # collectors that read their figures when scraped (Redis memory, from the engine)


def collect_at_scrape(collector) -> None:
    """Add a collector whose ``collect()`` runs at each scrape, in the scraping process only (it
    asks a server, such as Redis INFO, rather than counting in the workers)."""
    if collector in _AT_SCRAPE:
        return
    _AT_SCRAPE.append(collector)
    REGISTRY.register(collector)


def registry(*extra):
    """What a scrape or cache_stats reads: every worker's metrics summed, or this process's own;
    ``extra`` collectors (read at scrape) beside them."""
    path = workers_dir()
    if path is None and not extra:
        return REGISTRY
    summed = CollectorRegistry()
    if path is None:
        summed.register(_Own())  # the default registry holds the scrape-time collectors already
    else:
        multiprocess.MultiProcessCollector(summed, path=path)
        extra = (*_AT_SCRAPE, *extra)
    for collector in extra:
        summed.register(collector)
    return summed


class _Own:
    """This process's own metrics (the default registry) inside another registry."""

    def collect(self):
        return REGISTRY.collect()

# Jobs (Celery workers): outcomes and how long a job took from acceptance (the request that queued
# it) to its outcome. Workers on this host write into the same multiprocess directory; a worker on
# another host serves its own (JOB_METRICS_PORT). Queue depth is read from the broker at scrape.
jobs_finished = Counter("jobs_total", "Jobs by kind and outcome (completed, failed, retried, skipped).",
                        ["job", "outcome"])
jobs_enqueued = Counter("jobs_enqueue_total", "Jobs handed to the broker by a request: sent, failed (the broker "
                        "did not take it), skipped (the broker failed moments ago; the sweep sends it).",
                        ["outcome"])
job_latency = Histogram(
    "job_latency_seconds", "From the request that queued a job to its outcome.", ["job"],
    buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0),
)


class QueueDepthCollector:
    """``jobs_queue_depth{queue}``: messages waiting in the broker, read when /metrics is scraped
    (one LLEN per queue), so it is the same whichever process answers."""

    def __init__(self, depth) -> None:
        self._depth = depth  # () -> {queue: waiting messages}, raising when the broker is unreachable

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily("jobs_queue_depth", "Jobs waiting in the broker for a worker.", labels=["queue"])
        try:
            depths = self._depth()
        except Exception:  # a scrape must not fail because the broker is down; the gauge is then absent
            depths = {}
        for queue, depth in depths.items():
            family.add_metric([queue], depth)
        yield family
