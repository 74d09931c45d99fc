"""On PostgreSQL, the database keeps each passage's full-text vector (its heading weighted
above its text) and a GIN index over it. A trigger rather than code, so every insert or
edit is indexed however it was written; deleting a passage removes it from the index.
SQLite (the embedded default) ranks lexically and needs neither."""

from django.db import migrations

CREATE = (
    """
    CREATE OR REPLACE FUNCTION knowledge_passage_search_vector() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW.search_vector :=
            setweight(to_tsvector('pg_catalog.english', coalesce(NEW.heading, '')), 'A')
            || setweight(to_tsvector('pg_catalog.english', coalesce(NEW.text, '')), 'B');
        RETURN NEW;
    END;
    $$;
    """,
    "CREATE TRIGGER knowledge_passage_search_vector BEFORE INSERT OR UPDATE OF heading, text, search_vector "
    "ON knowledge_passage FOR EACH ROW EXECUTE FUNCTION knowledge_passage_search_vector();",
    "CREATE INDEX knowledge_passage_search ON knowledge_passage USING gin (search_vector);",
)

DROP = (
    "DROP INDEX IF EXISTS knowledge_passage_search;",
    "DROP TRIGGER IF EXISTS knowledge_passage_search_vector ON knowledge_passage;",
    "DROP FUNCTION IF EXISTS knowledge_passage_search_vector();",
)


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for statement in statements:
            schema_editor.execute(statement, params=None)

    return run


class Migration(migrations.Migration):
    dependencies = [("knowledge", "0001_initial")]

    operations = [migrations.RunPython(_run(CREATE), _run(DROP))]
