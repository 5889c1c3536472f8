-- Orders, their history, event dedup, PaymentIntent links, parked events and
-- the transactional outbox (contract section 5).

CREATE TABLE orders (
    order_id            text PRIMARY KEY,
    status              text NOT NULL
        CHECK (status IN ('awaiting_payment', 'paid', 'payment_failed', 'expired')),
    checkout_session_id text,
    payment_intent_id   text,
    amount_total        bigint,
    currency            text,
    customer_email      text,
    livemode            boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_payment_intent_id_idx ON orders (payment_intent_id);
CREATE INDEX orders_checkout_session_id_idx ON orders (checkout_session_id);

CREATE TABLE order_transitions (
    id          bigserial PRIMARY KEY,
    order_id    text NOT NULL REFERENCES orders (order_id),
    from_status text,
    to_status   text NOT NULL,
    event_id    text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Each status is entered at most once per order (the state machine only
    -- moves up its precedence); the database holds that too.
    UNIQUE (order_id, to_status)
);

-- One row per Stripe event id ever taken in: the dedup record.
CREATE TABLE processed_events (
    event_id     text PRIMARY KEY,
    event_type   text NOT NULL,
    outcome      text NOT NULL,
    order_id     text,
    processed_at timestamptz NOT NULL DEFAULT now()
);

-- Which order a PaymentIntent belongs to, learnt from the Checkout Session
-- that references it. The first link wins.
CREATE TABLE payment_intent_links (
    payment_intent_id text PRIMARY KEY,
    order_id          text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- PaymentIntent events that named no known order yet; applied when the
-- session that links them arrives.
CREATE TABLE parked_events (
    event_id          text PRIMARY KEY,
    payment_intent_id text NOT NULL,
    event_type        text NOT NULL,
    body              bytea NOT NULL,
    parked_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX parked_events_payment_intent_id_idx ON parked_events (payment_intent_id);

-- Messages for downstream services, written in the same transaction as the
-- state change and published by the relay.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    message_id   text NOT NULL UNIQUE,
    routing_key  text NOT NULL,
    body         bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    attempts     integer NOT NULL DEFAULT 0,
    last_error   text
);
CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;
