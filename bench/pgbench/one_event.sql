-- One checkout.session.completed (paid, new order) as the worker applies it
-- today (crates/fulfillment/src/store.rs): one transaction, 14 round trips.
-- (chr(58) is the ":" of the lock keys: pgbench would take ":pi_" for a variable.)
\set n random(1, 2000000000)
BEGIN;
INSERT INTO processed_events (event_id, event_type, outcome) VALUES ('evt_' || :n::bigint || '_' || :client_id::int, 'checkout.session.completed', 'processing') ON CONFLICT (event_id) DO NOTHING;
SELECT pg_advisory_xact_lock(hashtextextended('payment_intent' || chr(58) || 'pi_' || :n::bigint || '_' || :client_id::int, 0));
SELECT pg_advisory_xact_lock(hashtextextended('order' || chr(58) || 'ord_' || :n::bigint || '_' || :client_id::int, 0));
SELECT status, checkout_session_id, payment_intent_id, amount_total, currency, customer_email, livemode FROM orders WHERE order_id = 'ord_' || :n::bigint || '_' || :client_id::int;
INSERT INTO orders (order_id, status, checkout_session_id, payment_intent_id, amount_total, currency, customer_email, livemode) VALUES ('ord_' || :n::bigint || '_' || :client_id::int, 'paid', 'cs_test_ord_' || :n::bigint, 'pi_' || :n::bigint || '_' || :client_id::int, 4200, 'eur', 'buyer@example.com', false) ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status, checkout_session_id = EXCLUDED.checkout_session_id, payment_intent_id = EXCLUDED.payment_intent_id, amount_total = EXCLUDED.amount_total, currency = EXCLUDED.currency, customer_email = EXCLUDED.customer_email, livemode = EXCLUDED.livemode, updated_at = now();
INSERT INTO order_transitions (order_id, from_status, to_status, event_id) VALUES ('ord_' || :n::bigint || '_' || :client_id::int, NULL, 'paid', 'evt_' || :n::bigint || '_' || :client_id::int) ON CONFLICT DO NOTHING;
INSERT INTO outbox (message_id, routing_key, body) VALUES ('ord_' || :n::bigint || '_' || :client_id::int || '/paid', 'order.paid', convert_to(repeat('x', 480), 'UTF8')) ON CONFLICT (message_id) DO NOTHING;
INSERT INTO payment_intent_links (payment_intent_id, order_id) VALUES ('pi_' || :n::bigint || '_' || :client_id::int, 'ord_' || :n::bigint || '_' || :client_id::int) ON CONFLICT (payment_intent_id) DO NOTHING;
SELECT order_id FROM payment_intent_links WHERE payment_intent_id = 'pi_' || :n::bigint || '_' || :client_id::int;
WITH released AS (DELETE FROM parked_events WHERE payment_intent_id = 'pi_' || :n::bigint || '_' || :client_id::int RETURNING event_id, body, parked_at) SELECT event_id, body FROM released ORDER BY parked_at, event_id;
UPDATE processed_events SET outcome = 'applied', order_id = 'ord_' || :n::bigint || '_' || :client_id::int, processed_at = now() WHERE event_id = 'evt_' || :n::bigint || '_' || :client_id::int;
SELECT pg_notify('outbox', '');
COMMIT;
