from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("core", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="pendinginvalidation",
            name="slot",
            field=models.PositiveSmallIntegerField(null=True),
        ),
        migrations.AddIndex(
            model_name="pendinginvalidation",
            index=models.Index(fields=["slot", "id"], name="core_pending_slot_id"),
        ),
    ]
