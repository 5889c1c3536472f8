-- The rest of the payment lifecycle (issue 14, contract 8.6): the canceled
-- status, and the facts recorded beside an order's status: failed payment
-- attempts, refunds, disputes.
--
-- The new columns are nullable or have a constant default: catalog changes,
-- not rewrites. Replacing the status CHECK and adding the two row CHECKs
-- validates the existing rows once (a scan under a lock that holds writes
-- back for its length: seconds per million orders).

ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check
    CHECK (status IN ('awaiting_payment', 'canceled', 'expired', 'payment_failed', 'paid'));

-- payment_intent.payment_failed events applied to the order, and the latest
-- of them (by the event's created, then its id) with what Stripe said.
ALTER TABLE orders ADD COLUMN failed_attempts integer NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN last_failure_event_id text;
ALTER TABLE orders ADD COLUMN last_failure_created bigint;
ALTER TABLE orders ADD COLUMN last_failure_payment_intent_id text;
ALTER TABLE orders ADD COLUMN last_failure_code text;
ALTER TABLE orders ADD COLUMN last_decline_code text;
ALTER TABLE orders ADD COLUMN last_failure_message text;
ALTER TABLE orders ADD CONSTRAINT orders_last_failure_whole CHECK (
    (last_failure_event_id IS NULL) = (last_failure_created IS NULL)
    AND (last_failure_event_id IS NULL) = (last_failure_payment_intent_id IS NULL));

-- The largest charge.refunded amount_refunded seen (refunds only grow), and
-- whether it covers the charge: both set, or neither.
ALTER TABLE orders ADD COLUMN amount_refunded bigint;
ALTER TABLE orders ADD COLUMN refund_status text
    CHECK (refund_status IN ('partial', 'full'));
ALTER TABLE orders ADD CONSTRAINT orders_refund_whole
    CHECK ((amount_refunded IS NULL) = (refund_status IS NULL));

-- Disputes of an order's charges: open, then won or lost (never reopened).
CREATE TABLE order_disputes (
    order_id        text NOT NULL REFERENCES orders (order_id),
    dispute_id      text NOT NULL,
    status          text NOT NULL CHECK (status IN ('open', 'won', 'lost')),
    charge_id       text,
    reason          text,
    amount          bigint,
    currency        text,
    -- Stripe's deadline for evidence (evidence_details.due_by).
    evidence_due_by timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, dispute_id)
);
-- The dispute gauges read the open ones by deadline.
CREATE INDEX order_disputes_open_idx ON order_disputes (evidence_due_by)
    WHERE status = 'open';
