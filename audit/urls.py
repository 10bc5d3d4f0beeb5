from django.urls import path

from . import views

app_name = "audit"

urlpatterns = [
    path("", views.AuditRecordListView.as_view(), name="record-list"),
]
