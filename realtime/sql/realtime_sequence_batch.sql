-- realtime_sequence_batch(): Number one batch of committed events in one round trip (realtime/sequencer.py).
-- Installed by realtime/migrations/0004_sequence_batch_function.py. This is the text the database holds after
-- the latest migration (pg_get_functiondef / pg_get_triggerdef); tests/realtime/test_sql_files.py
-- checks that. To change it, edit it here and add a migration that installs the new text
-- as a string of its own (applied migrations keep theirs, so replaying them is unchanged).

CREATE OR REPLACE FUNCTION public.realtime_sequence_batch(p_limit integer)
 RETURNS TABLE(id bigint, type character varying, aggregate_type character varying, aggregate_id character varying, data jsonb, channels jsonb, audience jsonb, created_at timestamp with time zone, "position" bigint, sequence bigint)
 LANGUAGE plpgsql
AS $function$
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
          JOIN "accounts_user" person ON person.id = (a.value)::bigint
        RETURNING 1
    )
    SELECT u.id, u.type, u.aggregate_type, u.aggregate_id, u.data, u.channels, u.audience,
           u.created_at, u.position, u.sequence
      FROM updated u
     ORDER BY u.position;
END;
$function$;
