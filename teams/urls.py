from __future__ import annotations

from django.urls import path

from teams import views

urlpatterns = [
    path("", views.team_list, name="team_list"),
    path("new/", views.team_create, name="team_create"),
    path("<int:team_id>/", views.team_detail, name="team_detail"),
    path("<int:team_id>/limits/", views.team_limits, name="team_limits"),
    path("<int:team_id>/members/add/", views.member_add, name="member_add"),
    path("<int:team_id>/members/<int:membership_id>/role/", views.member_role, name="member_role"),
    path(
        "<int:team_id>/members/<int:membership_id>/remove/",
        views.member_remove,
        name="member_remove",
    ),
    path(
        "<int:team_id>/members/<int:membership_id>/limits/",
        views.member_limits,
        name="member_limits",
    ),
]
