from __future__ import annotations

from django.urls import path

from conversations import views

urlpatterns = [
    path("", views.chat_home, name="chat_home"),
    path("c/", views.sidebar, name="sidebar"),
    path("c/<uuid:conversation_id>/", views.conversation_detail, name="conversation_detail"),
    path("c/<uuid:conversation_id>/rename/", views.conversation_rename, name="conversation_rename"),
    path("c/<uuid:conversation_id>/delete/", views.conversation_delete, name="conversation_delete"),
    path(
        "c/<uuid:conversation_id>/context/",
        views.conversation_context_strategy,
        name="conversation_context_strategy",
    ),
    path(
        "c/<uuid:conversation_id>/settings/",
        views.conversation_settings,
        name="conversation_settings",
    ),
    path("settings/new-chat/", views.new_chat_settings, name="new_chat_settings"),
    path(
        "c/<uuid:conversation_id>/messages/",
        views.conversation_messages,
        name="conversation_messages",
    ),
    path("c/<uuid:conversation_id>/pin/", views.conversation_pin, name="conversation_pin"),
    path(
        "c/<uuid:conversation_id>/archive/",
        views.conversation_archive,
        name="conversation_archive",
    ),
    path("archive/", views.archive, name="archive"),
    path("search/", views.search, name="search"),
]
