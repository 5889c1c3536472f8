-- Bounded state (issue 9): stored event bodies, retention, parked-event
-- expiry, and the order each outbox message belongs to.
--
-- The new columns are nullable without a default: adding them is a catalog
-- change, not a rewrite. The indexes are built here with a plain CREATE
-- INDEX, which blocks writes to the table while it runs: seconds per million
-- rows. On a large database, create them first by hand, without blocking,
-- with the same statements and CONCURRENTLY (outside a transaction); then
-- IF NOT EXISTS makes this migration skip them.

-- What Stripe sent, byte for byte, kept as long as the dedup record
-- (RETENTION_DAYS). NULL for events processed before this migration.
ALTER TABLE processed_events ADD COLUMN body bytea;
-- When the event was first taken in (processed_at moves when a parked event
-- is released later). NULL for events processed before this migration.
ALTER TABLE processed_events ADD COLUMN received_at timestamptz;
-- The retention job deletes by age, in small batches.
CREATE INDEX IF NOT EXISTS processed_events_processed_at_idx ON processed_events (processed_at);
-- `orders show` lists an order's events.
CREATE INDEX IF NOT EXISTS processed_events_order_id_idx ON processed_events (order_id);

-- Set when a parked event outlived PARKED_TTL with no session claiming it.
-- The row stays: a session arriving later still releases it (the money is
-- real), and until then it is the evidence an operator works from.
ALTER TABLE parked_events ADD COLUMN expired_at timestamptz;
CREATE INDEX IF NOT EXISTS parked_events_live_parked_at_idx ON parked_events (parked_at)
    WHERE expired_at IS NULL;

-- Which order a message is about, for `orders show` (the message id is not a
-- reliable way back: long order ids are hashed into it). NULL for messages
-- written before this migration.
ALTER TABLE outbox ADD COLUMN order_id text;
CREATE INDEX IF NOT EXISTS outbox_order_id_idx ON outbox (order_id);
-- Published rows are deleted by age (OUTBOX_RETENTION_DAYS); unpublished
-- ones are never in this index, so never candidates.
CREATE INDEX IF NOT EXISTS outbox_published_at_idx ON outbox (published_at)
    WHERE published_at IS NOT NULL;
