from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("teams/", include("teams.urls")),
    path("usage/", include("usage.urls")),
    path("", include("conversations.urls")),
    path("", include("sharing.urls")),
]
