"""The automatic failover delay in seconds (a failover inside a minute needs a delay
shorter than one): existing policies keep their delay, converted."""

import django.core.validators
from django.db import migrations, models


def minutes_to_seconds(apps, schema_editor):
    Policy = apps.get_model("replication", "ReplicationPolicy")
    Policy.objects.update(failover_delay_seconds=models.F("failover_delay_seconds") * 60)


def seconds_to_minutes(apps, schema_editor):
    Policy = apps.get_model("replication", "ReplicationPolicy")
    for row in Policy.objects.all():
        row.failover_delay_seconds = max(1, (row.failover_delay_seconds + 59) // 60)
        row.save(update_fields=["failover_delay_seconds"])


class Migration(migrations.Migration):
    dependencies = [("replication", "0001_repl_initial")]

    operations = [
        migrations.RenameField(
            model_name="replicationpolicy",
            old_name="failover_delay_minutes",
            new_name="failover_delay_seconds",
        ),
        migrations.RunPython(minutes_to_seconds, seconds_to_minutes),
        migrations.AlterField(
            model_name="replicationpolicy",
            name="failover_delay_seconds",
            field=models.PositiveIntegerField(
                default=300,
                validators=[django.core.validators.MaxValueValidator(86400)],
                verbose_name="after the primary is offline for (seconds)",
            ),
        ),
    ]
