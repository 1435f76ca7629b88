from django.apps import AppConfig


class EvalsConfig(AppConfig):
    name = "evals"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # A job that names an eval has each epoch checkpoint scored; training knows nothing of evals.
        from evals.epochs import on_checkpoint_stored
        from training.models import checkpoint_stored

        checkpoint_stored.connect(on_checkpoint_stored, dispatch_uid="evals.epochs")

    def judge_exists(self, name):
        """Whether a score_model or label_model grader's `model` names a judge Attune can ask (a snapshot,
        or `<endpoint>/<model>`): training checks a reinforcement job's grader through this."""
        from evals.requests import judge_exists

        return judge_exists(name)

    def start_background(self):
        from django.conf import settings

        from evals.runner import start_inprocess_eval_worker

        start_inprocess_eval_worker(settings.EVAL_WORKER_SLOTS)
        return f"Eval worker running in this process ({settings.EVAL_WORKER_SLOTS} slot(s))."

    def stop_background(self):
        from evals.runner import stop_inprocess_eval_worker

        stop_inprocess_eval_worker()

    def bootstrap_demo(self):
        from evals.demo import ensure_demo_eval

        return ensure_demo_eval()
