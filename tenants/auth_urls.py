"""Login, logout and the second-factor challenge (under the portal namespace)."""

from django.urls import path

from .auth_views import LoginView, LogoutView
from .identity_views import (
    ChallengeKeyOptionsView,
    ChallengeKeyVerifyView,
    TwoFactorChallengeView,
)
from .password_reset_views import PasswordResetConfirmView, PasswordResetRequestView

urlpatterns = [
    path("login/", LoginView.as_view(), name="login"),
    path("logout/", LogoutView.as_view(), name="logout"),
    path("login/reset/", PasswordResetRequestView.as_view(), name="password-reset"),
    path(
        "login/reset/<str:uidb64>/<str:token>/",
        PasswordResetConfirmView.as_view(),
        name="password-reset-confirm",
    ),
    path("login/two-factor/", TwoFactorChallengeView.as_view(), name="two-factor"),
    path(
        "login/two-factor/key/options/",
        ChallengeKeyOptionsView.as_view(),
        name="two-factor-key-options",
    ),
    path(
        "login/two-factor/key/verify/",
        ChallengeKeyVerifyView.as_view(),
        name="two-factor-key-verify",
    ),
]
