from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("backup", "0011_verify_offnode"),
    ]

    operations = [
        migrations.AddField(
            model_name="offnodecopy",
            name="guids",
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
