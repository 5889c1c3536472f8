-- Off-Stripe payments (issue 12): custom-payment reports, the distinct
-- payments of each order, and the anomalies a person has to look at.
-- All three are business records, kept like orders (no retention).

-- Every custom-payment report taken in (POST /payments/custom), one row per
-- report id, written in the worker's transaction with the order it moved.
CREATE TABLE custom_payments (
    report_id                  text PRIMARY KEY,
    order_id                   text NOT NULL,
    outcome                    text NOT NULL CHECK (outcome IN ('guaranteed', 'failed')),
    amount                     bigint NOT NULL CHECK (amount > 0),
    currency                   text NOT NULL,
    custom_payment_method_type text NOT NULL,
    payment_reference          text NOT NULL,
    initiated_at               timestamptz NOT NULL,
    completed_at               timestamptz NOT NULL,
    customer_email             text,
    stripe_customer            text,
    received_at                timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX custom_payments_order_id_idx ON custom_payments (order_id);

-- The distinct payments that reached each order: 'stripe' (every Stripe
-- event that pays the order is one payment) or 'custom:{report id}'. A
-- second row for an order is a double payment (see order_anomalies).
CREATE TABLE order_payments (
    order_id   text NOT NULL,
    source     text NOT NULL,
    -- The first event that showed this payment.
    event_id   text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, source)
);
-- Every order paid before this migration was paid through Stripe: without
-- this, a custom payment reaching one of them would not be seen as a second.
INSERT INTO order_payments (order_id, source, event_id, created_at)
SELECT o.order_id, 'stripe', coalesce(t.event_id, ''), coalesce(t.created_at, o.updated_at)
FROM orders o
LEFT JOIN order_transitions t ON t.order_id = o.order_id AND t.to_status = 'paid'
WHERE o.status = 'paid'
ON CONFLICT DO NOTHING;

-- What is wrong with an order beyond its status. kind 'paid_twice': a
-- second distinct payment reached a paid order; the customer may need a
-- refund (docs/runbook.md#fulfillmentorderanomaly).
CREATE TABLE order_anomalies (
    id               bigserial PRIMARY KEY,
    order_id         text NOT NULL,
    kind             text NOT NULL,
    -- The event that revealed it, the payment it brought, and the order's
    -- payments before it (order_payments.source values).
    event_id         text NOT NULL,
    payment          text NOT NULL,
    earlier_payments text[] NOT NULL,
    detected_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (order_id, kind, event_id)
);
