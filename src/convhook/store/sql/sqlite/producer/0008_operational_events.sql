-- Operational events (endpoint.disabled, endpoint.enabled, endpoint.recovered, delivery.failed)
-- are events whose subject is an endpoint: conversation_id holds the endpoint id and
-- conversation_seq the endpoint's own counter, kept here and moved on in the transaction that
-- records one.
ALTER TABLE endpoints ADD COLUMN event_seq INTEGER NOT NULL DEFAULT 0;

-- An endpoint whose event_types is NULL ("all") gets every conversation event but no
-- operational one: a receiver that knows the platform's shapes alone never sees a payload it
-- cannot read. Operational events go only to endpoints that list their type.
DROP TRIGGER events_fan_out;

CREATE TRIGGER events_fan_out AFTER INSERT ON events
BEGIN
    INSERT INTO deliveries (event_seq, event_id, endpoint_id, workspace_id, conversation_id, conversation_seq, event_type, next_attempt_at, created_at, updated_at) SELECT NEW.seq, NEW.id, e.id, NEW.workspace_id, NEW.conversation_id, NEW.conversation_seq, NEW.event_type, NEW.created_at, NEW.created_at, NEW.created_at FROM endpoints AS e WHERE e.workspace_id = NEW.workspace_id AND e.enabled = 1 AND ((e.event_types IS NULL AND NEW.event_type LIKE 'conversation.%') OR EXISTS (SELECT 1 FROM json_each(e.event_types) WHERE json_each.value = NEW.event_type)); END;
