"""URLs under /install/: the bootstrap script operators download onto new nodes."""

from django.urls import path

from .install import SCRIPT_NAME, bootstrap_script

urlpatterns = [
    path(SCRIPT_NAME, bootstrap_script, name="bootstrap-script"),
]
