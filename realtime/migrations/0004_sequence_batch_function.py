"""realtime_sequence_batch(): one numbering pass of the sequencer in one statement (PostgreSQL).

`realtime.sequencer` holds the sequencer lock and calls it; it does what the portable path of
`_sequence_batch` does statement by statement, in one round trip:

- reads up to `p_limit` committed events without a position, oldest insertion id first;
- numbers them max(position)+1, +2, ... in that order, and gives each the next per-aggregate
  sequence after the highest one already assigned to its aggregate;
- writes the replay index keyed by position: one EventChannel row per channel, one
  EventRecipient row per audience member that still exists as a user;
- returns the numbered events in position order, for the caller to publish.

Called outside a transaction, the statement is its own transaction; inside one, it joins it.
SQLite (the embedded default) keeps the statement-by-statement path.
"""

from django.conf import settings
from django.db import migrations

FORWARD = r"""
CREATE OR REPLACE FUNCTION realtime_sequence_batch(p_limit integer)
RETURNS TABLE (
    id bigint, type varchar, aggregate_type varchar, aggregate_id varchar, data jsonb,
    channels jsonb, audience jsonb, created_at timestamptz, "position" bigint, sequence bigint
) AS $$
#variable_conflict use_column
DECLARE
    last_position bigint;
BEGIN
    SELECT COALESCE(MAX(e.position), 0) INTO last_position FROM realtime_event e;
    RETURN QUERY
    WITH pending AS (
        SELECT e.id, e.aggregate_type, e.aggregate_id
          FROM realtime_event e
         WHERE e.position IS NULL
         ORDER BY e.id
         LIMIT p_limit
    ), last_sequences AS (
        SELECT k.aggregate_type, k.aggregate_id, COALESCE(MAX(x.sequence), 0) AS last_sequence
          FROM (SELECT DISTINCT p.aggregate_type, p.aggregate_id FROM pending p) k
          LEFT JOIN realtime_event x
            ON x.aggregate_type = k.aggregate_type AND x.aggregate_id = k.aggregate_id
           AND x.sequence IS NOT NULL
         GROUP BY k.aggregate_type, k.aggregate_id
    ), numbered AS (
        SELECT p.id,
               last_position + row_number() OVER (ORDER BY p.id) AS new_position,
               l.last_sequence + row_number() OVER (
                   PARTITION BY p.aggregate_type, p.aggregate_id ORDER BY p.id
               ) AS new_sequence
          FROM pending p
          JOIN last_sequences l
            ON l.aggregate_type = p.aggregate_type AND l.aggregate_id = p.aggregate_id
    ), updated AS (
        UPDATE realtime_event e
           SET position = n.new_position, sequence = n.new_sequence
          FROM numbered n
         WHERE e.id = n.id
        RETURNING e.id, e.type, e.aggregate_type, e.aggregate_id, e.data, e.channels,
                  e.audience, e.created_at, e.position, e.sequence
    ), channel_rows AS (
        INSERT INTO realtime_eventchannel (event_id, channel)
        SELECT u.position, c.value FROM updated u, jsonb_array_elements_text(u.channels) c
        RETURNING 1
    ), recipient_rows AS (
        -- Only users that exist: a user deleted between the emit and this step must not fail
        -- the numbering of everyone's events (the row keeps its audience list).
        INSERT INTO realtime_eventrecipient (event_id, user_id)
        SELECT u.position, person.id
          FROM updated u, jsonb_array_elements(u.audience) a
          JOIN {user_table} person ON person.id = (a.value)::bigint
        RETURNING 1
    )
    SELECT u.id, u.type, u.aggregate_type, u.aggregate_id, u.data, u.channels, u.audience,
           u.created_at, u.position, u.sequence
      FROM updated u
     ORDER BY u.position;
END;
$$ LANGUAGE plpgsql;
"""

BACKWARD = "DROP FUNCTION IF EXISTS realtime_sequence_batch(integer);"


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        user_table = apps.get_model(settings.AUTH_USER_MODEL)._meta.db_table
        quoted = schema_editor.connection.ops.quote_name(user_table)
        schema_editor.execute(FORWARD.replace("{user_table}", quoted), params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD, params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("realtime", "0003_event_position"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [migrations.RunPython(forward, backward)]
