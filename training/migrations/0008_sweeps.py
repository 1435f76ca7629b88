import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

import training.ids


class Migration(migrations.Migration):

    dependencies = [
        ("training", "0007_job_init_checkpoint"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Sweep",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("public_id", models.CharField(default=training.ids.new_sweep_id, editable=False, max_length=40,
                                               unique=True)),
                ("spec", models.JSONField(default=dict)),
                ("definition", models.JSONField(default=dict)),
                ("metric", models.CharField(max_length=300)),
                ("created_at", models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                ("created_by", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                                                 related_name="sweeps", to=settings.AUTH_USER_MODEL)),
            ],
            options={"ordering": ["-created_at", "-id"]},
        ),
        migrations.AddField(
            model_name="finetuningjob",
            name="sweep",
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                                    related_name="jobs", to="training.sweep"),
        ),
    ]
