"""Roles: admins are staff users; evaluators are members of the "evaluators" group.

Admins may do everything. Evaluators reach only their rating tasks, the
leaderboard, their API keys and the pages of a comparison of their own; every
other page answers 403 to them, checked before any object is looked up.
Anonymous users go to login. tests/test_roles.py lists every route.
"""

from functools import wraps

from asgiref.sync import iscoroutinefunction
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Group, User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils.crypto import get_random_string

EVALUATORS_GROUP = "evaluators"


def is_admin(user):
    return bool(user.is_authenticated and user.is_staff)


def is_evaluator(user):
    return bool(user.is_authenticated and not user.is_staff
                and user.groups.filter(name=EVALUATORS_GROUP).exists())


def can_rate(user):
    """Who may use the playground and rating pages."""
    return is_admin(user) or is_evaluator(user)


def make_user(username, role, password=None):
    """Create an admin (staff) or an evaluator; return (user, password), a generated one when none is given."""
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


def admin_required(view):
    """Admins only, checked before the view looks anything up: an evaluator gets 403 at every admin URL,
    whether the object it names exists or not. Works on sync and async views."""
    if iscoroutinefunction(view):
        @login_required
        @wraps(view)
        async def wrapped_async(request, *args, **kwargs):
            if not is_admin(await request.auser()):
                raise PermissionDenied("This page is for admins.")
            return await view(request, *args, **kwargs)

        return wrapped_async

    @login_required
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not is_admin(request.user):
            raise PermissionDenied("This page is for admins.")
        return view(request, *args, **kwargs)

    return wrapped


def rater_required(view):
    @login_required
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not can_rate(request.user):
            raise PermissionDenied("This page is for admins and evaluators.")
        return view(request, *args, **kwargs)

    return wrapped


def roles(request):
    """Template context: what the navigation may show."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"is_admin": False, "is_evaluator": False}
    return {"is_admin": is_admin(user), "is_evaluator": is_evaluator(user)}


def login_locked_out(request, response=None, credentials=None):
    """The login page saying that this user name is locked out from this address for a while (django-axes)."""
    from django.conf import settings
    from django.shortcuts import render

    return render(request, "login.html", {
        "locked_out": True, "lockout_minutes": settings.ATTUNE_LOGIN_LOCKOUT_MINUTES,
        "username": (credentials or {}).get("username") or "",
    }, status=429)
