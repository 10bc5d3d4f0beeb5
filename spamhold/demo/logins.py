"""The demo administrators' logins: printed when created, reset only on request."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from django.db import transaction
from django.utils.translation import gettext as _

from tenants import actions
from tenants.models import Administrator
from ums import context

from .catalogue import ADMINS
from .tree import Login, new_password

RESET_COMMAND = "manage.py demo_passwords --reset"


def login_line(login: Login) -> str:
    # A fixed layout: the browser test of `make run` reads the first login from it.
    return f"  {login.username:<12} {login.password:<20} home customer: {login.home}"


def print_logins(write: Callable[[str], object], logins: Iterable[Login]) -> None:
    for login in logins:
        write(login_line(login))


def reset_passwords() -> list[Login]:
    """Give every existing demo administrator a new random password (audited)."""
    homes = {a.username: a.home for a in ADMINS}
    logins = []
    with context.acting(channel=context.CHANNEL_CLI), transaction.atomic():
        for admin in Administrator.objects.filter(username__in=homes).order_by("pk"):
            password = new_password()
            actions.set_administrator_password(actor=None, admin=admin, password=password)
            logins.append(Login(admin.username, password, homes[admin.username]))
    return logins


def existing_usernames() -> list[str]:
    names = {a.username for a in ADMINS}
    return list(
        Administrator.objects.filter(username__in=names)
        .order_by("pk")
        .values_list("username", flat=True)
    )


def how_to_reset() -> str:
    return _(
        "The demo administrators keep the passwords they were given when they were "
        "created. To give them new ones (printed once): %(command)s"
    ) % {"command": RESET_COMMAND}
