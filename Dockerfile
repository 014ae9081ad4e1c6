# The web service of docker-compose.yml: gunicorn serving the Django app on 0.0.0.0:8000.
# An exact tag: a rebuild months later gets the same Python and Debian release.
FROM python:3.11.10-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=config.settings.production \
    GUNICORN_BIND=0.0.0.0:8000 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus

WORKDIR /app

# Dependencies first: the layer is reused until the lock changes. requirements.lock pins every
# package, transitive ones included, with its hashes (`make lock` regenerates it from requirements.txt).
COPY requirements.lock .
RUN pip install --no-cache-dir --require-hashes -r requirements.lock

COPY . .

# Static files for the admin (served by whitenoise). The secret here only satisfies the settings
# import during the build; the real one comes from the environment at run time.
RUN SECRET_KEY=collectstatic-only ALLOWED_HOSTS=localhost python manage.py collectstatic --noinput -v0

# var/secrets: where compose keeps the secrets it generates (a volume takes this owner when created).
RUN mkdir -p /app/var/secrets && useradd --system --uid 10001 --home-dir /app app && chown -R app /app
USER app

EXPOSE 8000

# Migrations on every start (idempotent), then gunicorn replaces the shell so it receives SIGTERM
# from `docker stop`. gunicorn's config empties PROMETHEUS_MULTIPROC_DIR as it starts.
CMD ["sh", "-c", "python manage.py migrate --noinput && exec gunicorn config.wsgi:application -c config/gunicorn.conf.py"]
