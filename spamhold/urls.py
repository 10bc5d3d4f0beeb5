"""Portal URLs of the spam hold (namespace "spamhold"; "home" is the queue)."""

from django.urls import path

from . import views

app_name = "spamhold"

urlpatterns = [
    path("", views.QueueView.as_view(), name="home"),
    path("act/", views.ActionView.as_view(), name="act"),
    path("refresh/", views.RefreshView.as_view(), name="refresh"),
    path("<int:pk>/", views.MessageView.as_view(), name="message"),
    path("<int:pk>/content/", views.NodeReadView.as_view(part="content"), name="content"),
    path("<int:pk>/log/", views.NodeReadView.as_view(part="log"), name="log"),
]
