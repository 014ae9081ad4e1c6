from django.apps import AppConfig


class DemoConfig(AppConfig):
    """Demo data for `make run` (`manage.py load_demo_data`): above every domain app, imported by none."""

    name = "demo"
    verbose_name = "Demo data"
