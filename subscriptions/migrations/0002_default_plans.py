from django.db import migrations

PLANS = [
    {"code": "free", "name": "Free", "price": "0.00", "coins_per_period": 30, "daily_generation_limit": 5,
     "daily_message_limit": 50, "includes_premium": False, "sort_order": 0},
    {"code": "plus", "name": "Plus", "price": "9.99", "coins_per_period": 300, "daily_generation_limit": 50,
     "daily_message_limit": 500, "includes_premium": False, "sort_order": 10},
    {"code": "pro", "name": "Pro", "price": "29.99", "coins_per_period": 1500, "daily_generation_limit": 300,
     "daily_message_limit": 5000, "includes_premium": True, "sort_order": 20},
]


def create_plans(apps, schema_editor):
    Plan = apps.get_model("subscriptions", "Plan")
    for plan in PLANS:
        Plan.objects.get_or_create(code=plan["code"], defaults=plan)


class Migration(migrations.Migration):
    dependencies = [("subscriptions", "0001_initial")]
    operations = [migrations.RunPython(create_plans, migrations.RunPython.noop)]
