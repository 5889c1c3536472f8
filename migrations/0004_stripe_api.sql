-- Talking back to Stripe (issue 11): the Connect account an order's Stripe
-- events belong to (the events' top-level `account`), so that calls to
-- Stripe about the order act for it (`Stripe-Account`) and every message
-- names it. NULL for the platform's own orders, and for orders written
-- before this migration. A nullable column without a default: a catalog
-- change, not a table rewrite, safe on a serving database.
ALTER TABLE orders ADD COLUMN account text;
