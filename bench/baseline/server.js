// The naive baseline `make bench` measures the service against
// (docs/benchmarks.md): a Stripe webhook endpoint written the way most teams
// write it, and the way the product's seed did. Express behind `node:cluster`
// (one process per core), stripe-node's `constructEvent` to verify the
// signature, then the whole effect synchronously in ONE PostgreSQL
// transaction per request (dedup insert, an order upsert that only moves up
// and never leaves `paid`, an outbox row), answering 200 after the commit.
// No broker: what it costs to take the broker hop out is what the
// comparison shows.
//
// Settings (environment): PORT, DATABASE_URL, STRIPE_WEBHOOK_SECRET,
// BASELINE_WORKERS (default 2), BASELINE_POOL (connections per worker, pg's
// default 10).
'use strict';

const cluster = require('node:cluster');
const express = require('express');
const Stripe = require('stripe');
const { Pool } = require('pg');

const PORT = Number(process.env.PORT || 8090);
const WORKERS = Number(process.env.BASELINE_WORKERS || 2);
const POOL = Number(process.env.BASELINE_POOL || 10);
const SECRET = process.env.STRIPE_WEBHOOK_SECRET;
const DATABASE_URL = process.env.DATABASE_URL;

// Its own tables, in its own database: the same shape as the service's
// where it matters (the bench reads `orders` and `outbox` of both alike).
const SCHEMA = `
CREATE TABLE IF NOT EXISTS processed_events (
  event_id    text PRIMARY KEY,
  event_type  text NOT NULL,
  received_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS orders (
  order_id            text PRIMARY KEY,
  status              text NOT NULL,
  status_rank         int  NOT NULL,
  checkout_session_id text,
  payment_intent_id   text,
  amount_total        bigint,
  currency            text,
  customer_email      text,
  created_at          timestamptz NOT NULL DEFAULT now(),
  updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS outbox (
  id           bigserial PRIMARY KEY,
  message_id   text NOT NULL UNIQUE,
  routing_key  text NOT NULL,
  payload      jsonb NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  published_at timestamptz
);`;

// An order only moves up this precedence, so `paid` is never left.
const RANK = { awaiting_payment: 0, expired: 1, payment_failed: 2, paid: 3 };

// The status an event asks for, or null for an event we ignore.
function targetStatus(event) {
  const object = event.data.object;
  switch (event.type) {
    case 'checkout.session.completed':
      return ['paid', 'no_payment_required'].includes(object.payment_status)
        ? 'paid'
        : 'awaiting_payment';
    case 'checkout.session.async_payment_succeeded':
      return 'paid';
    case 'checkout.session.async_payment_failed':
      return 'payment_failed';
    case 'checkout.session.expired':
      return 'expired';
    case 'payment_intent.succeeded':
      return 'paid';
    default:
      return null;
  }
}

function orderId(object) {
  return object.client_reference_id || (object.metadata && object.metadata.order_id) || null;
}

// The whole effect of one event, in one transaction. Returns what happened.
async function apply(pool, event) {
  const status = targetStatus(event);
  const object = event.data.object;
  const order = orderId(object);
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const fresh = await client.query(
      'INSERT INTO processed_events (event_id, event_type) VALUES ($1, $2) ON CONFLICT DO NOTHING',
      [event.id, event.type],
    );
    if (fresh.rowCount === 0) {
      await client.query('COMMIT');
      return 'duplicate';
    }
    if (status === null || order === null) {
      await client.query('COMMIT');
      return 'ignored';
    }
    const isSession = object.object === 'checkout.session';
    const moved = await client.query(
      `INSERT INTO orders (order_id, status, status_rank, checkout_session_id,
                           payment_intent_id, amount_total, currency, customer_email)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
       ON CONFLICT (order_id) DO UPDATE
         SET status = EXCLUDED.status, status_rank = EXCLUDED.status_rank,
             checkout_session_id = COALESCE(EXCLUDED.checkout_session_id, orders.checkout_session_id),
             payment_intent_id = COALESCE(EXCLUDED.payment_intent_id, orders.payment_intent_id),
             updated_at = now()
         WHERE orders.status_rank < EXCLUDED.status_rank
       RETURNING order_id`,
      [
        order,
        status,
        RANK[status],
        isSession ? object.id : null,
        isSession ? object.payment_intent : object.id,
        isSession ? object.amount_total : object.amount_received,
        object.currency,
        (object.customer_details && object.customer_details.email) || object.customer_email || null,
      ],
    );
    if (moved.rowCount === 1) {
      const messageId = `${order}/${status}`;
      const payload = {
        type: `order.${status}`,
        message_id: messageId,
        order_id: order,
        status,
        event_id: event.id,
        livemode: event.livemode,
      };
      await client.query(
        `INSERT INTO outbox (message_id, routing_key, payload) VALUES ($1, $2, $3)
         ON CONFLICT (message_id) DO NOTHING`,
        [messageId, `order.${status}`, payload],
      );
    }
    await client.query('COMMIT');
    return 'processed';
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    client.release();
  }
}

function worker() {
  const stripe = new Stripe('sk_test_baseline_makes_no_api_calls');
  const pool = new Pool({ connectionString: DATABASE_URL, max: POOL });
  const app = express();
  app.get('/healthz', (_req, res) => res.send('ok'));
  app.post(
    '/webhooks/stripe',
    express.raw({ type: '*/*', limit: '1mb' }),
    async (req, res) => {
      let event;
      try {
        event = stripe.webhooks.constructEvent(req.body, req.headers['stripe-signature'], SECRET);
      } catch (err) {
        return res.status(400).send(`Webhook Error: ${err.message}`);
      }
      try {
        await apply(pool, event);
        res.json({ received: true });
      } catch (err) {
        console.error(`event ${event.id}: ${err.message}`);
        res.status(500).send('could not store the event');
      }
    },
  );
  app.listen(PORT, '127.0.0.1');
}

async function primary() {
  if (!SECRET || !DATABASE_URL) {
    console.error('STRIPE_WEBHOOK_SECRET and DATABASE_URL are required');
    process.exit(2);
  }
  const pool = new Pool({ connectionString: DATABASE_URL, max: 1 });
  await pool.query(SCHEMA);
  await pool.end();
  for (let i = 0; i < WORKERS; i++) cluster.fork();
  cluster.on('exit', (w, code) => console.error(`worker ${w.process.pid} exited with ${code}`));
  console.error(`baseline: ${WORKERS} workers on http://127.0.0.1:${PORT}/webhooks/stripe`);
}

if (cluster.isPrimary) {
  primary().catch((err) => {
    console.error(err);
    process.exit(1);
  });
} else {
  worker();
}
