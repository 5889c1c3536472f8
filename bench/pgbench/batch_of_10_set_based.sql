-- Ten such events in one transaction with every statement covering all ten
-- (set-based: unnest/generate_series instead of a statement per event): 14
-- round trips and one commit for ten events. pgbench's tps x 10 = events/s.
\set n random(1, 2000000000)
BEGIN;
INSERT INTO processed_events (event_id, event_type, outcome) SELECT 'evt_' || :n::bigint || '_' || :client_id::int || '_' || g, 'checkout.session.completed', 'processing' FROM generate_series(1, 10) g ON CONFLICT (event_id) DO NOTHING;
SELECT pg_advisory_xact_lock(hashtextextended('payment_intent' || chr(58) || 'pi_' || :n::bigint || '_' || :client_id::int || '_' || g, 0)) FROM generate_series(1, 10) g;
SELECT pg_advisory_xact_lock(hashtextextended('order' || chr(58) || 'ord_' || :n::bigint || '_' || :client_id::int || '_' || g, 0)) FROM generate_series(1, 10) g;
SELECT status, checkout_session_id, payment_intent_id, amount_total, currency, customer_email, livemode FROM orders WHERE order_id IN (SELECT 'ord_' || :n::bigint || '_' || :client_id::int || '_' || g FROM generate_series(1, 10) g);
INSERT INTO orders (order_id, status, checkout_session_id, payment_intent_id, amount_total, currency, customer_email, livemode) SELECT 'ord_' || :n::bigint || '_' || :client_id::int || '_' || g, 'paid', 'cs_test_' || g, 'pi_' || :n::bigint || '_' || :client_id::int || '_' || g, 4200, 'eur', 'buyer@example.com', false FROM generate_series(1, 10) g ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status, updated_at = now();
INSERT INTO order_transitions (order_id, from_status, to_status, event_id) SELECT 'ord_' || :n::bigint || '_' || :client_id::int || '_' || g, NULL, 'paid', 'evt_' || g FROM generate_series(1, 10) g ON CONFLICT DO NOTHING;
INSERT INTO outbox (message_id, routing_key, body) SELECT 'ord_' || :n::bigint || '_' || :client_id::int || '_' || g || '/paid', 'order.paid', convert_to(repeat('x', 480), 'UTF8') FROM generate_series(1, 10) g ON CONFLICT (message_id) DO NOTHING;
INSERT INTO payment_intent_links (payment_intent_id, order_id) SELECT 'pi_' || :n::bigint || '_' || :client_id::int || '_' || g, 'ord_' || g FROM generate_series(1, 10) g ON CONFLICT (payment_intent_id) DO NOTHING;
SELECT order_id FROM payment_intent_links WHERE payment_intent_id IN (SELECT 'pi_' || :n::bigint || '_' || :client_id::int || '_' || g FROM generate_series(1, 10) g);
WITH released AS (DELETE FROM parked_events WHERE payment_intent_id IN (SELECT 'pi_' || :n::bigint || '_' || :client_id::int || '_' || g FROM generate_series(1, 10) g) RETURNING event_id, body, parked_at) SELECT event_id, body FROM released;
UPDATE processed_events SET outcome = 'applied', processed_at = now() WHERE event_id IN (SELECT 'evt_' || :n::bigint || '_' || :client_id::int || '_' || g FROM generate_series(1, 10) g);
SELECT pg_notify('outbox', '');
COMMIT;
