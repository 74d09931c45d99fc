"""audit_append(body, recorded_at, batch): the append path of ``audit.record`` on PostgreSQL,
in one round trip (see apps/audit/chain.py, ``insert_and_chain``).

If the chain lock (the advisory lock chain.CHAIN_LOCK_ID) is free, it takes up to ``batch``
pending events and then ``body`` (when given), numbers and hashes each onto the head with
the same preimage as apps/audit/canonical.chain_hash, inserts them, and returns how many
pending events it took. If the lock is taken, it queues ``body`` as pending and returns -1.
Each statement of a PL/pgSQL function sees rows committed before it started, so the head
is read after the lock is held. The function runs with sequential scans off: its plans are
cached per session, and a plan made while the table was empty would scan the whole chain
on every append once it has grown (seen in bench/audit.py as throughput falling with size). The verifier (Python, apps/audit/chain.py) recomputes every
hash independently of this function.
"""

from django.db import migrations

CHAIN_LOCK_ID = 0x61756469  # apps.audit.chain.CHAIN_LOCK_ID

CREATE = f"""
CREATE OR REPLACE FUNCTION audit_append(new_body text, recorded timestamptz, batch integer)
RETURNS integer LANGUAGE plpgsql
-- Its plans are cached for the session: planned on an empty table, the head lookup would
-- stay a sequential scan as the chain grows. The primary-key indexes are always right here.
SET enable_seqscan = off
AS $$
DECLARE
    head_seq bigint;
    head_hash text;
    bodies text[];
    taken integer;
    seqs bigint[] := '{{}}';
    prev_hashes text[] := '{{}}';
    row_hashes text[] := '{{}}';
    item text;
BEGIN
    IF NOT pg_try_advisory_xact_lock({CHAIN_LOCK_ID}) THEN
        IF new_body IS NOT NULL THEN
            INSERT INTO audit_pendingevent (body, recorded_at) VALUES (new_body, recorded);
        END IF;
        RETURN -1;
    END IF;
    WITH removed AS (
        DELETE FROM audit_pendingevent
        WHERE id IN (SELECT id FROM audit_pendingevent ORDER BY id LIMIT batch)
        RETURNING id, body
    )
    SELECT coalesce(array_agg(body ORDER BY id), '{{}}'), count(*) INTO bodies, taken FROM removed;
    IF new_body IS NOT NULL THEN
        bodies := bodies || new_body;
    END IF;
    IF cardinality(bodies) = 0 THEN
        RETURN 0;
    END IF;
    SELECT seq, row_hash INTO head_seq, head_hash FROM audit_auditevent ORDER BY seq DESC LIMIT 1;
    IF NOT FOUND THEN
        head_seq := 0;
        head_hash := repeat('0', 64);
    END IF;
    FOREACH item IN ARRAY bodies LOOP
        head_seq := head_seq + 1;
        seqs := seqs || head_seq;
        prev_hashes := prev_hashes || head_hash;
        head_hash := encode(pg_catalog.sha256(convert_to(head_hash || E'\\n' || head_seq || E'\\n' || item, 'UTF8')), 'hex');
        row_hashes := row_hashes || head_hash;
    END LOOP;
    INSERT INTO audit_auditevent (seq, prev_hash, row_hash, body)
    SELECT * FROM unnest(seqs, prev_hashes, row_hashes, bodies);
    RETURN taken;
END;
$$;
"""

DROP = "DROP FUNCTION IF EXISTS audit_append(text, timestamptz, integer);"


def _run(statement):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(statement, params=None)

    return run


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_append_only_trigger")]

    operations = [migrations.RunPython(_run(CREATE), _run(DROP), elidable=False)]
