"""On PostgreSQL, the database itself refuses UPDATE, DELETE and TRUNCATE of audit events,
whatever the client (the ORM, raw SQL, psql). Only someone who may alter the table can
switch this off, and what they then change is caught by audit_verify against the signed
checkpoints kept outside the database."""

from django.db import migrations

FUNCTION = """
CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_auditevent is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
"""

CREATE = (
    FUNCTION,
    "CREATE TRIGGER audit_no_update_delete BEFORE UPDATE OR DELETE ON audit_auditevent "
    "FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();",
    "CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit_auditevent "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();",
)

DROP = (
    "DROP TRIGGER IF EXISTS audit_no_truncate ON audit_auditevent;",
    "DROP TRIGGER IF EXISTS audit_no_update_delete ON audit_auditevent;",
    "DROP FUNCTION IF EXISTS audit_refuse_change();",
)


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return  # SQLite (the embedded default): the model and the admin refuse changes
        for statement in statements:
            schema_editor.execute(statement, params=None)

    return run


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]

    operations = [migrations.RunPython(_run(CREATE), _run(DROP), elidable=False)]
