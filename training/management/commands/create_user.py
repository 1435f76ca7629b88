from django.core.management.base import BaseCommand, CommandError

from config.access import make_user


class Command(BaseCommand):
    help = "Create a user with a generated password, printed once."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", choices=["evaluator", "admin"], default="evaluator")

    def handle(self, username, role, **options):
        try:
            _, password = make_user(username, role)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"user: {username}\nrole: {role}\npassword: {password}")
