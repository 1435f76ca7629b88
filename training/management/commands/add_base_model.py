from django.core.management.base import BaseCommand, CommandError

from training.base_models import BaseModelError, register_base_model


class Command(BaseCommand):
    help = "Register a base model: a Hugging Face id, or a folder under ATTUNE_HOME/models."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("source")
        parser.add_argument("--trust-remote-code", action="store_true",
                            help="Allow the model's own Python code to run (off unless you trust its authors).")

    def handle(self, name, source, trust_remote_code, **options):
        try:
            model = register_base_model(name, source, trust_remote_code)
        except BaseModelError as exc:
            raise CommandError(f"{exc.field}: {exc.message}") from exc
        template = "with a chat template" if model.has_chat_template else "chat template unknown or missing"
        self.stdout.write(f"Registered {model.name} ({model.source}; max length {model.max_length}; {template}).")
