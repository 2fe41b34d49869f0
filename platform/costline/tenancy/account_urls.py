"""Sign-in, sign-out, password change and reset (Django's views), invitations: /accounts/."""

from django.contrib.auth import views as auth_views
from django.urls import include, path

from costline.tenancy import views
from costline.tenancy.forms import SignInForm

urlpatterns = [
    # A signed-in person opening the sign-in page goes on to their organisation instead.
    path(
        "login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True, authentication_form=SignInForm),
        name="login",
    ),
    path("", include("django.contrib.auth.urls")),
    path("invite/<str:token>/", views.accept_invitation, name="accept_invitation"),
]
