-- Payment Records (issue 12): each custom-payment report is recorded to
-- Stripe once (POST /v1/payment_records/report_payment). One job per
-- report, written in the worker's transaction with the report itself; the
-- reporter claims due jobs with FOR UPDATE SKIP LOCKED, one at a time,
-- outside any order's lock (see fulfillment_core::record).
CREATE TABLE payment_record_jobs (
    report_id        text PRIMARY KEY REFERENCES custom_payments (report_id),
    order_id         text NOT NULL,
    state            text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'recorded', 'refused')),
    -- Derived from the report id, stored before any call: every retry, by
    -- any process, sends this key. A person re-sending a refused job
    -- (`orders retry-record`) gets the next generation's key.
    idempotency_key  text NOT NULL,
    key_generation   integer NOT NULL DEFAULT 0,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    -- The Payment Record (pr_...), once Stripe made it: final.
    record_id        text,
    recorded_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'recorded') = (record_id IS NOT NULL))
);
-- What the reporter claims: due pending jobs, oldest due first.
CREATE INDEX payment_record_jobs_due_idx ON payment_record_jobs (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX payment_record_jobs_order_id_idx ON payment_record_jobs (order_id);

-- Reports taken in before this migration are recorded too.
INSERT INTO payment_record_jobs (report_id, order_id, idempotency_key, created_at)
SELECT report_id, order_id, 'fulfillment-payment-record/' || report_id, received_at
FROM custom_payments
ON CONFLICT DO NOTHING;
