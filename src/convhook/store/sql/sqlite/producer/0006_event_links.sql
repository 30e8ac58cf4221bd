-- Each event names the event before it in its conversation, so a delivery can carry it
-- (convhook-previous-event-id) without a second lookup, and the W3C traceparent of the request
-- that caused it, so every delivery attempt continues that trace. Both NULL for events
-- recorded before this version (and previous_event_id for a conversation's first event).
ALTER TABLE events ADD COLUMN previous_event_id TEXT;

ALTER TABLE events ADD COLUMN traceparent TEXT;
