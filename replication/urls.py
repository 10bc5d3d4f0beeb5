"""Portal pages of replication."""

from django.urls import path

from . import views

app_name = "replication"

urlpatterns = [
    path("", views.ReplicationListView.as_view(), name="list"),
    path("domains/<int:pk>/", views.ReplicationDomainView.as_view(), name="domain"),
    path("domains/<int:pk>/sync/", views.SyncNowView.as_view(), name="sync"),
    path("domains/<int:pk>/failover/", views.FailoverView.as_view(), name="failover"),
    path("domains/<int:pk>/failback/", views.FailbackView.as_view(), name="failback"),
    path("policies/<int:pk>/", views.PolicyEditView.as_view(), name="policy"),
]
