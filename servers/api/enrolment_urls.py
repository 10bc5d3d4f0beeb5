"""API routes for enrolment: token management and the node registration endpoint."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from .enrolment import EnrolmentTokenViewSet, NodeRegistrationView

router = SimpleRouter()
router.register("enrolment-tokens", EnrolmentTokenViewSet, basename="enrolmenttoken")

urlpatterns = [
    *router.urls,
    path("nodes/register/", NodeRegistrationView.as_view(), name="node-register"),
]
