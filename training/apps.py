from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Webhooks follow the jobs' ends; the models that end them know nothing of webhooks.
        from training import webhooks
        from training.models import job_ended

        job_ended.connect(webhooks.on_job_ended, dispatch_uid="training.webhooks")
