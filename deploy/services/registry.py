"""Every service converge knows, in the order converge applies them.

Order matters where one service needs another running: the mail store (zfs) before
Courier creates Maildirs in it, SpamAssassin/ClamAV before Postfix hands them mail,
Courier's authdaemond before Postfix's SASL asks it. Each module is imported guarded, so
a module that is missing or broken does not take the others down with it; converge then
simply does not manage that service (and logs why).
"""

from __future__ import annotations

import importlib
import inspect
import logging

from .base import Service

logger = logging.getLogger(__name__)

MODULES = (
    "deploy.services.zfs",
    "deploy.services.spamassassin",
    "deploy.services.clamav",
    "deploy.services.opendkim",
    "deploy.services.opendmarc",
    "deploy.services.srs",
    "deploy.services.courier",
    "deploy.services.lda",
    "deploy.services.postfix",
    "deploy.services.nginx",
    "deploy.services.roundcube",
    "deploy.services.nextcloud",
    "deploy.services.radicale",
    "deploy.services.collabora",
)

#: Why a module could not be loaded, by module name (shown in converge logs).
UNAVAILABLE: dict[str, str] = {}


def _load(name: str) -> Service | None:
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # a broken sibling module must not stop mail converges
        UNAVAILABLE[name] = f"{type(exc).__name__}: {exc}"
        logger.warning("service module %s unavailable: %s", name, exc)
        return None
    # Convention: a module-level ``SERVICE`` instance. Failing that, the one concrete
    # Service subclass the module defines is instantiated.
    service = getattr(module, "SERVICE", None)
    if isinstance(service, Service):
        return service
    classes = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, Service)
        and obj is not Service
        and obj.__module__.startswith(name)
        and not inspect.isabstract(obj)
    ]
    if len(classes) == 1:
        return classes[0]()
    UNAVAILABLE[name] = "no SERVICE instance"
    return None


SERVICES: list[Service] = [s for s in (_load(name) for name in MODULES) if s is not None]
