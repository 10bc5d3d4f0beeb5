"""Portal pages of team chat."""

from django.urls import path

from . import views

app_name = "chat"

urlpatterns = [
    path("", views.RealmListView.as_view(), name="realm-list"),
    path("new/", views.RealmCreateView.as_view(), name="realm-create"),
    path("<id:pk>/edit/", views.RealmEditView.as_view(), name="realm-edit"),
    path("<id:pk>/delete/", views.RealmDeleteView.as_view(), name="realm-delete"),
    path("<id:pk>/sync/", views.RealmSyncView.as_view(), name="realm-sync"),
    path("<id:pk>/users/", views.RealmUsersView.as_view(), name="realm-users"),
]
