"""Portal pages for enrolment tokens (mounted at /servers/enrolment/, namespace "enrolment")."""

from django.urls import path

import ums.converters  # noqa: F401  (registers the "id" converter)

from . import enrolment_views as views

app_name = "enrolment"

urlpatterns = [
    path("", views.EnrolmentTokenListView.as_view(), name="token-list"),
    path("new/", views.EnrolmentTokenCreateView.as_view(), name="token-create"),
    path("<id:pk>/revoke/", views.EnrolmentTokenRevokeView.as_view(), name="token-revoke"),
]
