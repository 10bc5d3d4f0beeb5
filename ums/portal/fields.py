"""Scoped choice fields of the portal, above all the one customer picker.

Every form that chooses a customer, in any app, uses :class:`CustomerChoiceField`: customers
in the actor's scope in tree order, indented by depth below the actor's own customer. It
lives in ``ums`` (the machinery) so that apps which may not import ``tenants`` (``audit``)
can use it too; the Customer model is looked up through the app registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django import forms
from django.apps import apps
from django.db import models
from django.forms.models import ModelChoiceIterator
from django.utils.translation import gettext_lazy as _

from ums import scoping

DISPLAY_LIMIT = 500


def _depth_of(path: str | None) -> int:
    return len([p for p in (path or "").split("/") if p]) - 1


class _LimitedChoiceIterator(ModelChoiceIterator):
    """Lists at most ``display_limit`` choices (plus the selected one); validation is unlimited."""

    def __iter__(self) -> Iterator[tuple[Any, str]]:
        if self.field.empty_label is not None:
            yield ("", self.field.empty_label)
        for obj in self.field.display_objects():
            yield self.choice(obj)

    def __len__(self) -> int:
        return len(self.field.display_objects()) + (self.field.empty_label is not None)

    def __bool__(self) -> bool:
        return True


class ScopedModelChoiceField(forms.ModelChoiceField):
    """A choice of objects within the actor's scope, from :func:`ums.scoping.scope_queryset`.

    The field is declared with an unscoped queryset and offers nothing until
    :meth:`bind_actor` runs (``tenants.forms.ActorForm`` does that). Any object in scope
    validates, but the select lists only the first ``display_limit`` (by path) or those
    matching ``search``: a tree of 10,000 customers must not become a 10,000-option page.
    """

    iterator = _LimitedChoiceIterator

    def __init__(
        self, queryset: models.QuerySet, *, display_limit: int = DISPLAY_LIMIT, **kwargs: Any
    ) -> None:
        self.base_queryset = queryset
        self.display_limit = display_limit
        self.search = ""
        self.pinned: Any = None
        self.root_depth = 0
        self._display_cache: list[Any] | None = None
        super().__init__(queryset.none(), **kwargs)

    def bind_actor(self, actor: Any, exclude: models.Q | None = None) -> None:
        queryset = scoping.scope_queryset(self.base_queryset.all(), actor)
        if exclude is not None:
            queryset = queryset.exclude(exclude)
        self.queryset = queryset
        self.root_depth = _depth_of(scoping.scope_path_of(actor))
        self._display_cache = None

    def display_objects(self) -> list[Any]:
        if self._display_cache is None:
            queryset = self.queryset
            if self.search:
                queryset = queryset.filter(name__icontains=self.search)
            rows = list(queryset[: self.display_limit])
            pinned = str(self.pinned) if self.pinned not in (None, "") else None
            if pinned and pinned.isdigit() and all(str(o.pk) != pinned for o in rows):
                extra = self.queryset.filter(pk=int(pinned)).first() if len(pinned) < 19 else None
                if extra is not None:
                    rows.insert(0, extra)
            self._display_cache = rows
        return self._display_cache

    def label_from_instance(self, obj: Any) -> str:
        depth = _depth_of(getattr(obj, "path", None)) - self.root_depth
        return "— " * max(depth, 0) + str(obj)


class CustomerChoiceField(ScopedModelChoiceField):
    """The one customer picker of the portal: every form that chooses a customer uses it.

    Customers in the actor's scope in tree order, indented by depth below the actor's own
    customer; any customer in scope validates, the list shows the first ``display_limit``
    (plus the chosen one).
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("empty_label", _("Choose a customer…"))
        customer = apps.get_model("tenants", "Customer")
        super().__init__(customer.objects.order_by("path"), **kwargs)
