from django.contrib.auth.models import Group, User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils.crypto import get_random_string

from config.access import EVALUATORS_GROUP


def make_user(username, role, password=None):
    """Create an admin (staff) or an evaluator; return (user, password)."""
    if User.objects.filter(username=username).exists():
        raise ValueError(f"A user named {username!r} already exists.")
    password = password or get_random_string(16)
    try:
        validate_password(password, User(username=username))
    except ValidationError as exc:
        raise ValueError(" ".join(exc.messages)) from None
    user = User.objects.create_user(username=username, password=password)
    if role == "admin":
        user.is_staff = True
        user.is_superuser = True
        user.save(update_fields=["is_staff", "is_superuser"])
    else:
        group, _ = Group.objects.get_or_create(name=EVALUATORS_GROUP)
        user.groups.add(group)
    return user, password


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
