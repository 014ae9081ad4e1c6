#!/usr/bin/env python
import os
import sys
from pathlib import Path


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    # An operator command counts its metrics in its own process: written into the gunicorn workers'
    # directory, each run would leave files behind and its reads (cache_warm's misses) would count
    # as app traffic. It still reads that directory (cache_stats sums the workers' counters).
    workers_dir = os.environ.pop("PROMETHEUS_MULTIPROC_DIR", "") or str(Path(__file__).resolve().parent / "var" / "prometheus")
    if os.path.isdir(workers_dir):
        os.environ["METRICS_WORKERS_DIR"] = workers_dir
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
