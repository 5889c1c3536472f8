# The two set-up commands are `make run` and `make test` (see README.md).

CARGO      ?= cargo
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
BIN        := $(TARGET_DIR)/debug/fulfillment

# DEVELOPMENT ONLY: a made-up endpoint secret so `make run` works out of the
# box. Production sets STRIPE_WEBHOOK_SECRET to the endpoint's real whsec_.
DEV_SECRET := whsec_DEVELOPMENT_ONLY_not_a_real_stripe_secret

export DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/fulfillment
export AMQP_URL     ?= amqp://guest:guest@127.0.0.1:5672/%2f
export HTTP_ADDR    ?= 127.0.0.1:8080
export METRICS_ADDR ?= 127.0.0.1:9090

.PHONY: build run test lint fmt

build:
	$(CARGO) build -p fulfillment

run: build
	$(BIN) migrate
	@echo
	@echo "  fulfillment serve on http://$(HTTP_ADDR)  (metrics: http://$(METRICS_ADDR)/metrics)"
	@echo "  STRIPE_WEBHOOK_SECRET=$(DEV_SECRET)   <-- DEVELOPMENT SECRET, not for production"
	@echo
	@echo "  Send a signed test event from another shell:"
	@echo "    body='{\"id\":\"evt_dev_1\",\"object\":\"event\",\"type\":\"customer.created\",\"data\":{\"object\":{}}}'"
	@echo "    t=\$$(date +%s); sig=\$$(printf '%s.%s' \$$t \"\$$body\" | openssl dgst -sha256 -hmac '$(DEV_SECRET)' | awk '{print \$$NF}')"
	@echo "    curl -i http://$(HTTP_ADDR)/webhooks/stripe -H \"Stripe-Signature: t=\$$t,v1=\$$sig\" -d \"\$$body\""
	@echo
	STRIPE_WEBHOOK_SECRET=$(DEV_SECRET) $(BIN) serve

# Builds the binary the end-to-end tests run, then every test. The broker
# restart test stops the shared RabbitMQ, so it runs alone, last.
test:
	$(CARGO) build -p fulfillment
	$(CARGO) test --workspace
	$(CARGO) test -p fulfillment-tests --test broker_restart -- --ignored --test-threads=1

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all
