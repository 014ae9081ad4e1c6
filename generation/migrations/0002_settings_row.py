from django.db import migrations


def create_settings(apps, schema_editor):
    apps.get_model("generation", "GenerationSettings").objects.get_or_create(pk=1)


class Migration(migrations.Migration):
    dependencies = [("generation", "0001_initial")]
    operations = [migrations.RunPython(create_settings, migrations.RunPython.noop)]
