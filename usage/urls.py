from __future__ import annotations

from django.urls import path

from usage import views

urlpatterns = [
    path("", views.dashboard, name="usage_dashboard"),
    path("export.csv", views.dashboard_csv, name="usage_csv"),
    path("review/<uuid:conversation_id>/", views.conversation_review, name="usage_review"),
]
