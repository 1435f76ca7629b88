from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError

from api.models import ApiKey


class Command(BaseCommand):
    help = "Create an API key for a user and print it (only the key, so scripts can capture it)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="command line", help="What the key is for.")

    def handle(self, username, name, **options):
        user = User.objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}; create one with `manage.py create_user`.")
        _, raw = ApiKey.issue(user, name)
        self.stdout.write(raw)
