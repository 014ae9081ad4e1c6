from django.conf import settings
from django.db import migrations, models
from django.db.models import Count
from django.utils import timezone


def count_today(apps, schema_editor):
    """Carry today's usage over from the rows it used to be counted from, so the limits do not
    reset in the middle of the day of the upgrade."""
    DailyUsage = apps.get_model("subscriptions", "DailyUsage")
    Generation = apps.get_model("generation", "Generation")
    ChatMessage = apps.get_model("chat", "ChatMessage")
    now = timezone.now()
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    usage: dict[int, dict[str, int]] = {}
    for row in (Generation.objects.filter(created_at__gte=today).exclude(status="failed")
                .values("user_id").annotate(n=Count("id"))):
        usage.setdefault(row["user_id"], {})["generations"] = row["n"]
    for row in (ChatMessage.objects.filter(created_at__gte=today, role="user")
                .values("user_id").annotate(n=Count("id"))):
        usage.setdefault(row["user_id"], {})["messages"] = row["n"]
    DailyUsage.objects.bulk_create(
        [DailyUsage(user_id=user_id, day=today.date(), **counts) for user_id, counts in usage.items()],
        batch_size=1000,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("subscriptions", "0003_past_due_next_plan"),
        ("generation", "0002_settings_row"),
        ("chat", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="DailyUsage",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("day", models.DateField()),
                ("generations", models.PositiveIntegerField(default=0)),
                ("messages", models.PositiveIntegerField(default=0)),
                ("user", models.ForeignKey(on_delete=models.deletion.CASCADE, related_name="+",
                                           to=settings.AUTH_USER_MODEL)),
            ],
            options={
                "constraints": [models.UniqueConstraint(fields=("user", "day"), name="daily_usage_one_row_per_day")],
            },
        ),
        migrations.RunPython(count_today, migrations.RunPython.noop),
    ]
