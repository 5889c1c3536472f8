-- Line items on order.paid (issue 11, contract 8.3). With STRIPE_API_KEY
-- set, the worker writes an order.paid of a Checkout order held back
-- (awaiting_line_items) together with a job; the enrichment job fetches the
-- session's line items from Stripe outside any transaction, then, in one
-- short transaction, stores them, rewrites the message with them, releases
-- it to the relay and closes the job. See ARCHITECTURE.md, "Line items".
--
-- The new outbox column has a constant default: a catalog change, not a
-- rewrite. The new index is built with a plain CREATE INDEX over the
-- unpublished rows only (a handful on a healthy system).

-- True while the message waits for its line items: the relay leaves it.
ALTER TABLE outbox ADD COLUMN awaiting_line_items boolean NOT NULL DEFAULT false;
-- What the relay claims: unpublished rows that wait for nothing. A Stripe
-- outage can hold back many order.paid rows; the relay does not wade
-- through them on every poll.
CREATE INDEX IF NOT EXISTS outbox_ready_idx ON outbox (id)
    WHERE published_at IS NULL AND NOT awaiting_line_items;

-- One job per held-back order.paid (an order is paid once, so one per
-- order), deleted when its items are stored and the message released: the
-- table holds open work only. 'pending': the enrichment job tries, and
-- retries with growing delays while Stripe is down or limits us; 'held':
-- Stripe answered in a way no retry changes (the session does not exist in
-- the account asked, an invalid request), kept for a person (alert
-- FulfillmentLineItemsHeld, `orders show`, `orders retry-line-items`).
CREATE TABLE line_item_jobs (
    order_id            text PRIMARY KEY,
    -- The outbox row it holds back (outbox.message_id).
    message_id          text NOT NULL UNIQUE,
    checkout_session_id text NOT NULL,
    state               text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'held')),
    -- Tries so far. A claim counts one and is the claim's token: only the
    -- claimant whose count is still current may close the job, so a fetch
    -- that outlived its lease cannot close it a second time.
    attempts            integer NOT NULL DEFAULT 0,
    -- Not before then: the next retry, or the end of a claim's lease (a
    -- replica that dies mid-fetch leaves the job to the next one).
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT now()
);
-- What the enrichment job claims: due pending jobs, earliest first.
CREATE INDEX line_item_jobs_due_idx ON line_item_jobs (next_attempt_at)
    WHERE state = 'pending';

-- The line items of a paid order, in Stripe's order, as order.paid carries
-- them. Business records, kept like orders.
CREATE TABLE order_line_items (
    order_id     text NOT NULL,
    position     integer NOT NULL CHECK (position >= 0),
    -- Stripe's id of the line (li_...).
    line_item_id text NOT NULL,
    price_id     text,
    product_id   text,
    description  text,
    quantity     bigint,
    amount_total bigint NOT NULL,
    currency     text NOT NULL,
    PRIMARY KEY (order_id, position)
);
