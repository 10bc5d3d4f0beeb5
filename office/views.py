"""The office node's admin console password, revealed to operators on the node's page:
a POST (an audited read, not a link a proxy or the history keeps), answered with a page
that is not cached."""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import add_never_cache_headers
from django.views import View

from servers.models import Node
from tenants import permissions as perms
from ums import scoping
from ums.operators import is_operator
from ums.portal.views import PortalMixin

from . import actions


class ConsoleRevealView(PortalMixin, View):
    permission_required = perms.SERVERS_MANAGE
    http_method_names = ["post"]

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # Tenants do not learn the page exists (nor that the node has a console).
        if request.user.is_authenticated and not is_operator(request.user):
            raise Http404
        return super().dispatch(request, *args, **kwargs)

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        node = scoping.scope_queryset(Node.objects.all(), request.user).filter(pk=pk).first()
        if node is None:
            raise Http404
        console = actions.reveal_console(actor=request.user, node=node)
        response = render(request, "office/console_reveal.html", {"node": node, "console": console})
        add_never_cache_headers(response)
        return response
