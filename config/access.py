"""Roles: admins are staff users; evaluators are members of the "evaluators" group.

Admins may do everything. Evaluators reach only the playground and rating
pages; every other page answers 403 to them. Anonymous users go to login.
"""

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied

EVALUATORS_GROUP = "evaluators"


def is_admin(user):
    return bool(user.is_authenticated and user.is_staff)


def is_evaluator(user):
    return bool(user.is_authenticated and not user.is_staff
                and user.groups.filter(name=EVALUATORS_GROUP).exists())


def can_rate(user):
    """Who may use the playground and rating pages."""
    return is_admin(user) or is_evaluator(user)


def admin_required(view):
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
