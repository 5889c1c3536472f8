-- Dead letters, moved out of stripe.fulfillment.dlq by the workers, so that
-- reading them is a SELECT. Reading them from the queue (get, then requeue)
-- raised every message's delivery count and reordered them; quorum queues on
-- RabbitMQ 4.x drop a message past its delivery limit (20 by default).
CREATE TABLE dead_letters (
    id               bigserial PRIMARY KEY,
    -- sha256 of the message as dead-lettered (properties without the
    -- broker's x-delivery-count, and the body): a redelivery of a message
    -- already stored (crash before the ack) is stored once.
    fingerprint      text NOT NULL UNIQUE,
    -- The text columns are for reading; NUL bytes (which text refuses) are
    -- replaced. What replay publishes is `properties` and `body`, verbatim.
    event_id         text NOT NULL,
    event_type       text NOT NULL,
    error            text NOT NULL,
    error_kind       text NOT NULL,
    attempts         integer NOT NULL,
    first_failure_at timestamptz,
    last_failure_at  timestamptz,
    -- The AMQP properties (headers included) as JSON bytes; bytea, because
    -- jsonb and text refuse the NUL bytes an unstorable event may carry.
    properties       bytea NOT NULL,
    body             bytea NOT NULL,
    dead_lettered_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_event_id_idx ON dead_letters (event_id);
