#!/bin/sh
# `make run`: start a Celery worker and the scheduler (beat) beside the command given (gunicorn),
# and stop them when it exits. Their metrics go where gunicorn's do, so /metrics shows the jobs.
# JOB_WORKER_CONCURRENCY: jobs one worker runs at once (threads: the jobs wait on providers).
set -u
VENV=${VENV:-.venv}
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-$PWD/var/prometheus}"
mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
"$VENV/bin/celery" -A config worker --pool threads --concurrency "${JOB_WORKER_CONCURRENCY:-16}" \
  -Q generations,chat,default --loglevel "${JOB_LOG_LEVEL:-warning}" --hostname "worker@%h" &
worker=$!
"$VENV/bin/celery" -A config beat --loglevel "${JOB_LOG_LEVEL:-warning}" &
beat=$!
trap 'kill -TERM $worker $beat 2>/dev/null; wait $worker $beat 2>/dev/null' EXIT
trap 'exit 130' INT TERM
"$@"
