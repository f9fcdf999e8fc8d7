"""Full-text search indexes, on PostgreSQL only.

Expression indexes over the same ``to_tsvector`` expressions that conversations/search.py
queries with (built here by Django from the same SearchVector, so the two cannot drift apart).
SQLite has no such index; search there falls back to a plain substring match.
"""

from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector
from django.db import migrations

SEARCH_CONFIG = "english"  # conversations.search.SEARCH_CONFIG at the time of writing

INDEXES = (
    ("Message", "content", "msg_content_search"),
    ("Conversation", "title", "conv_title_search"),
)


def _index(field: str, name: str) -> GinIndex:
    return GinIndex(SearchVector(field, config=SEARCH_CONFIG), name=name)


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for model_name, field, name in INDEXES:
        schema_editor.add_index(apps.get_model("conversations", model_name), _index(field, name))


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for model_name, field, name in INDEXES:
        schema_editor.remove_index(apps.get_model("conversations", model_name), _index(field, name))


class Migration(migrations.Migration):
    dependencies = [("conversations", "0004_organize_titles")]

    operations = [migrations.RunPython(create, drop, elidable=False)]
