"""Generic portal views, NetBox style: an object page is declared, not written.

One place owns what every create / edit / delete page of the portal does:

* look the object (or the parent it is created under) up through the one scoping rule, once
  per request; outside scope, or an absurd id, is a 404;
* hand the valid form to an action function with ``actor=request.user``;
* show **every** error at once: the form's own field errors, then every field of the
  action's ``ValidationError`` mapped onto its field (errors of fields the form does not
  have, and permission refusals, on top of the form); nothing is written;
* on success: a message naming the object, and a redirect.

A per-object view declares ``model`` / ``parent_model``, ``form_class``, ``action`` and the
keyword it passes the object under, the title, the success message and where to go. Apps
keep their own templates; ``ums`` imports no app (DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views import generic

from ums import scoping
from ums.portal.views import PortalMixin

MAX_PK = 2**63


def scoped_object_or_404(
    model: type[models.Model], user: Any, pk: Any, select_related: tuple[str, ...] = ()
) -> Any:
    """The ``model`` row with ``pk`` if the user's scope holds it; 404 otherwise."""
    try:
        key = int(pk)
    except (TypeError, ValueError) as exc:
        raise Http404 from exc
    if not 0 < key < MAX_PK:
        raise Http404
    queryset = model._default_manager.all()
    if select_related:
        queryset = queryset.select_related(*select_related)
    return scoping.get_in_scope_or_404(queryset, user, pk=key)


def add_errors(form: forms.BaseForm, exc: ValidationError | PermissionDenied) -> None:
    """Put every error of an action's refusal on the form at once.

    A ``ValidationError`` keyed by field lands on each field the form has; keys the form
    does not have (and unkeyed errors) land on top of the form, prefixed with the field's
    name so the message still says what it is about.
    """
    if isinstance(exc, PermissionDenied):
        form.add_error(None, str(exc) or _("You do not have permission to do this."))
        return
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc.messages)
        return
    for field, errors in exc.message_dict.items():
        if field in form.fields:
            form.add_error(field, errors)
        elif field == forms.forms.NON_FIELD_ERRORS:
            form.add_error(None, errors)
        else:
            label = field.replace("_", " ")
            form.add_error(None, [f"{label}: {message}" for message in errors])


class ConfirmForm(forms.Form):
    """The empty form of a confirmation step (a delete, a bulk action)."""

    def __init__(self, *args: Any, actor: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.actor = actor


class ObjectMixin(PortalMixin):
    """The object of the URL (``model``) and/or the parent something is created under.

    Both come from the URL's ``pk`` through :func:`scoped_object_or_404`, once per request.
    """

    model: type[models.Model] | None = None
    parent_model: type[models.Model] | None = None
    select_related: tuple[str, ...] = ()
    parent_select_related: tuple[str, ...] = ()
    pk_url_kwarg = "pk"

    def get_object(self) -> Any:
        if self.model is None:
            return None
        if not hasattr(self, "_object"):
            self._object = scoped_object_or_404(
                self.model, self.request.user, self.kwargs[self.pk_url_kwarg], self.select_related
            )
        return self._object

    def get_parent(self) -> Any:
        if self.parent_model is None:
            return None
        if not hasattr(self, "_parent"):
            self._parent = scoped_object_or_404(
                self.parent_model,
                self.request.user,
                self.kwargs[self.pk_url_kwarg],
                self.parent_select_related,
            )
        return self._parent


def _resolve(path: str, roots: dict[str, Any]) -> Any:
    """``"object.domain_id"`` against ``{"object": ..., "parent": ..., "result": ...}``."""
    head, *rest = path.split(".")
    value = roots.get(head)
    for attr in rest:
        value = getattr(value, attr)
    return value


class ObjectFormView(ObjectMixin, generic.FormView):
    """Create or edit through an action function, declared by attributes.

    ``action`` is called as ``action(actor=..., <object_kwarg>=object,
    <parent_kwarg>=parent, **action_kwargs(form))``. Titles and messages are translated
    strings formatted with ``%(name)s`` (the object, or the parent on a create) and
    ``%(email)s`` where the object has one; the success message uses the action's result.
    URLs are URL names reversed with the pk of a target: ``"result"``, ``"object"``,
    ``"parent"`` or a dotted attribute such as ``"object.domain_id"`` (``None``: no args).
    """

    action: Callable[..., Any] | None = None
    object_kwarg = ""
    parent_kwarg = ""
    initial_from_object: tuple[str, ...] = ()
    title: Any = ""
    submit_label: Any = gettext_lazy("Save")
    note: Any = ""
    success_message: Any = ""
    success_url_name = ""
    success_url_target: str | None = "result"
    cancel_url_name = ""
    cancel_url_target: str | None = "object"

    # ---------------------------------------------------------------- declared behaviour

    def target(self) -> Any:
        """What titles talk about: the object, or the parent on a create."""
        obj = self.get_object()
        return obj if obj is not None else self.get_parent()

    @staticmethod
    def format_values(obj: Any) -> dict[str, Any]:
        return {"name": obj, "email": getattr(obj, "email", "")}

    def action_kwargs(self, form: Any) -> dict[str, Any]:
        if hasattr(form, "action_fields"):
            return form.action_fields()
        return dict(form.cleaned_data)

    def perform(self, form: Any) -> Any:
        kwargs = self.action_kwargs(form)
        if self.object_kwarg:
            kwargs[self.object_kwarg] = self.get_object()
        if self.parent_kwarg:
            kwargs[self.parent_kwarg] = self.get_parent()
        # Read through the class: a plain function stored on a class is not bound to self.
        action = type(self).action
        if action is None:
            raise NotImplementedError("declare action or override perform()")
        return action(actor=self.request.user, **kwargs)

    def url_for(self, name: str, target: str | None) -> str:
        if target is None:
            return reverse(name)
        value = _resolve(
            target,
            {
                "object": self.get_object(),
                "parent": self.get_parent(),
                "result": getattr(self, "result", None),
            },
        )
        return reverse(name, args=[getattr(value, "pk", value)])

    # ------------------------------------------------------------------ Django machinery

    def get_form_kwargs(self) -> dict[str, Any]:
        kwargs = super().get_form_kwargs()
        kwargs["actor"] = self.request.user
        return kwargs

    def get_initial(self) -> dict[str, Any]:
        initial = super().get_initial()
        obj = self.get_object()
        if obj is not None:
            initial.update({f: getattr(obj, f) for f in self.initial_from_object})
        return initial

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        target = self.target()
        values = self.format_values(target)
        context.update(
            {
                "object": self.get_object(),
                "parent": self.get_parent(),
                "title": str(self.title) % values if self.title else "",
                "submit_label": self.submit_label,
                "note": self.note,
                "cancel": self.url_for(self.cancel_url_name, self.cancel_url_target)
                if self.cancel_url_name
                else "",
            }
        )
        return context

    def form_valid(self, form: Any) -> HttpResponse:
        try:
            self.result = self.perform(form)
        except (ValidationError, PermissionDenied) as exc:
            add_errors(form, exc)
            return self.form_invalid(form)
        if self.success_message:
            shown = self.result if self.result is not None else self.target()
            messages.success(self.request, str(self.success_message) % self.format_values(shown))
        return HttpResponseRedirect(self.get_success_url())

    def get_success_url(self) -> str:
        return self.url_for(self.success_url_name, self.success_url_target)


class ObjectDeleteView(ObjectFormView):
    """A confirmation page whose POST deletes the object through ``action``."""

    form_class = ConfirmForm
    title = gettext_lazy("Delete %(name)s?")
    submit_label = gettext_lazy("Delete")
    success_url_target = None

    def action_kwargs(self, form: Any) -> dict[str, Any]:
        return {}

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["target"] = self.get_object()
        return context


class BulkActionView(PortalMixin, generic.View):
    """POST of ticked rows of ``bulk_model``: looked up in scope, one action call, one message.

    ``bulk_actions`` maps the submitted ``action`` to ``(function, message, needs_confirmation)``;
    the function takes ``actor=`` and ``objects=`` and returns how many it changed, and
    ``message(n)`` says so (a function, so the text can be a plural). A confirmation step renders
    ``confirm_template`` with the objects until the POST carries ``confirm``.
    """

    bulk_model: type[models.Model] | None = None
    bulk_actions: dict[str, tuple[Callable[..., Any], Callable[[int], str], bool]] = {}
    max_objects = 500
    confirm_template = ""

    def scope_queryset(self) -> models.QuerySet:
        assert self.bulk_model is not None
        manager = self.bulk_model._default_manager
        return scoping.scope_queryset(manager.all(), self.request.user)

    def selected(self, request: HttpRequest) -> list[Any]:
        ids = []
        for value in request.POST.getlist("selected")[: self.max_objects]:
            if value.isdigit() and 0 < int(value) < MAX_PK:
                ids.append(int(value))
        return list(self.scope_queryset().filter(pk__in=ids).order_by("pk"))

    def redirect_url(self) -> str:
        raise NotImplementedError

    def confirm_context(self, objects: list[Any], name: str) -> dict[str, Any]:
        return {}

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        name = request.POST.get("action", "")
        if name not in self.bulk_actions:
            messages.error(request, _("Choose what to do with the selected rows."))
            return HttpResponseRedirect(self.redirect_url())
        func, message, needs_confirmation = self.bulk_actions[name]
        objects = self.selected(request)
        if not objects:
            messages.error(request, _("Select at least one row."))
            return HttpResponseRedirect(self.redirect_url())
        if needs_confirmation and "confirm" not in request.POST:
            context = {
                "objects": objects,
                "action": name,
                "cancel": self.redirect_url(),
                **self.confirm_context(objects, name),
            }
            return render(request, self.confirm_template, context)
        try:
            done = func(actor=request.user, objects=objects)
        except (ValidationError, PermissionDenied) as exc:
            for text in getattr(exc, "messages", None) or [str(exc)]:
                messages.error(request, text)
        else:
            messages.success(request, message(done))
        return HttpResponseRedirect(self.redirect_url())
