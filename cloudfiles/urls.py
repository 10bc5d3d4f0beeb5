from django.urls import path

from . import views

app_name = "cloudfiles"

urlpatterns = [
    path("", views.HomeView.as_view(), name="home"),
    path("customers/<int:pk>/", views.CustomerFilesView.as_view(), name="customer"),
    path("customers/<int:pk>/revoke/", views.RevokeView.as_view(), name="revoke"),
]
