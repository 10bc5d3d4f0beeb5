"""Routes of the spam-hold API under /api/v1/spamhold/.

``messages/`` is the scoped list and detail (plus ``content``, ``log``, ``release`` and
``delete`` per message). The collection-level actions of the same viewset have short paths
of their own: ``query/`` (the product sheet's POST), ``counts/``, ``release/``, ``delete/``
and ``refresh/``. All carry the viewset's basename, so the scoping contract that covers
``spamhold-message`` covers them too.
"""

from django.urls import path
from rest_framework.routers import SimpleRouter

from .views import HeldMessageViewSet

BASENAME = "spamhold-message"

router = SimpleRouter()
router.register("spamhold/messages", HeldMessageViewSet, basename=BASENAME)


def _post(action: str) -> object:
    return HeldMessageViewSet.as_view({"post": action}, basename=BASENAME, detail=False)


urlpatterns = [
    path("spamhold/query/", _post("query"), name="spamhold-query"),
    path("spamhold/counts/", _post("counts"), name="spamhold-counts"),
    path("spamhold/release/", _post("release_many"), name="spamhold-release"),
    path("spamhold/delete/", _post("delete_many"), name="spamhold-delete"),
    path("spamhold/refresh/", _post("refresh"), name="spamhold-refresh"),
    *router.urls,
]
