from __future__ import annotations

from django.urls import path

from sharing import views

urlpatterns = [
    path("c/<uuid:conversation_id>/share/", views.share_panel, name="share_panel"),
    path("c/<uuid:conversation_id>/share/save/", views.share_save, name="share_save"),
    path("c/<uuid:conversation_id>/share/rotate/", views.share_rotate, name="share_rotate"),
    path("c/<uuid:conversation_id>/share/revoke/", views.share_revoke, name="share_revoke"),
    path("c/<uuid:conversation_id>/export.json", views.export_json, name="export_json"),
    path("c/<uuid:conversation_id>/export.md", views.export_markdown, name="export_markdown"),
    path("shares/", views.share_list, name="share_list"),
    path("s/<str:token>/", views.shared_conversation, name="shared_conversation"),
    path("s/<str:token>/continue/", views.share_continue, name="share_continue"),
    path("export/all.json", views.export_all, name="export_all"),
    path("import/", views.import_page, name="import_page"),
    path("import/file/", views.import_file, name="import_file"),
]
