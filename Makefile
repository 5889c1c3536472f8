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

.PHONY: build run test test-deps deploy-check compose-smoke chaos cluster soak lint fmt bench

build:
	$(CARGO) build -p fulfillment

run: build
	$(BIN) migrate
	@echo
	@echo "  fulfillment serve on http://$(HTTP_ADDR)  (metrics: http://$(METRICS_ADDR)/metrics)"
	@echo "  STRIPE_WEBHOOK_SECRET=$(DEV_SECRET)   <-- DEVELOPMENT SECRET, not for production"
	@echo
	@echo "  From another shell, send a signed test event and watch the order turn paid:"
	@echo "    STRIPE_WEBHOOK_SECRET=$(DEV_SECRET) $(BIN) send-event checkout.session.completed --order ord_demo --url http://$(HTTP_ADDR)/webhooks/stripe"
	@echo "    psql $(DATABASE_URL) -c 'select order_id, status from orders'"
	@echo "    rabbitmqctl list_queues name messages   # order.paid waits in fulfillment.unrouted until a downstream queue is bound"
	@echo "  Other types: checkout.session.expired, checkout.session.async_payment_succeeded, payment_intent.succeeded, customer.created, ... (see --help)"
	@echo
	STRIPE_WEBHOOK_SECRET=$(DEV_SECRET) $(BIN) serve

# The observability tests run the real Prometheus and promtool (Debian's package).
test-deps:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  echo "installing Prometheus (Debian package) for the observability tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

# The Kubernetes manifests through `kubectl kustomize` and a strict schema
# check (PyPI's kubernetes-validate), and every setting in them and in the
# compose file where it belongs (deploy/smoke/check_settings.py). Seconds.
deploy-check:
	deploy/smoke/deploy-check.sh

# Builds the binary the end-to-end tests run, then every test. The broker
# restart test stops the shared RabbitMQ, so it runs alone, last.
test: test-deps deploy-check
	$(CARGO) build -p fulfillment
	$(CARGO) test --workspace
	$(CARGO) test -p fulfillment-tests --test broker_restart -- --ignored --test-threads=1

# The fault-injection suite: stops the shared RabbitMQ and restarts
# PostgreSQL, so it runs alone (and never beside `make bench`).
chaos:
	$(CARGO) build -p fulfillment
	flock -o /tmp/fulfillment-heavy.lock $(CARGO) test -p fulfillment-tests --test chaos -- --ignored --nocapture

# Scale-out on a real RabbitMQ cluster (docs/scaling.md): starts three extra
# RabbitMQ nodes beside the host's (ports 5681-5683 and 25681-25683, a temp
# dir of their own), runs two receivers and two workers that know all three,
# kills the node leading stripe.fulfillment mid-stream and brings it back.
# About two minutes; heavy on both cores, so under the same lock as chaos.
cluster:
	$(CARGO) build -p fulfillment
	flock -o /tmp/fulfillment-heavy.lock $(CARGO) test -p fulfillment-tests --test cluster -- --ignored --nocapture

# Soak (a few minutes): a steady stream of 100,000 events with retention
# compressed to seconds; prints table sizes over time and checks that the
# tables retention bounds level off. SOAK_EVENTS and SOAK_RATE tune it.
soak:
	$(CARGO) build -p fulfillment
	flock -o /tmp/fulfillment-heavy.lock $(CARGO) test -p fulfillment-tests --test soak -- --ignored --nocapture

# deploy/Dockerfile and deploy/docker-compose.yml, built and run on this
# machine with stand-ins for Docker Hub's images (needs root and a Docker
# engine, which it starts; ~25 min the first time, ~2 after). Not part of
# `make test`; CI runs it after `make chaos`. Under the lock `make chaos` and
# `make bench` take: its release build takes both cores. See
# deploy/smoke/compose-smoke.sh.
compose-smoke:
	flock -o /tmp/fulfillment-heavy.lock deploy/smoke/compose-smoke.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# Benchmarks (docs/benchmarks.md): release build, the naive baseline's npm
# packages (bench/baseline, from its package-lock.json), then every benchmark
# in its own vhost and database, under the lock the fault-injection suite
# takes too. Prints the tables; writes $(TARGET_DIR)/bench/results.json.
# BENCH_EVENTS=2000 make bench: a quick run of the whole pipeline.
bench:
	$(CARGO) build --release -p fulfillment -p fulfillment-bench
	npm ci --prefix bench/baseline --no-audit --no-fund --loglevel=error
	flock -o /tmp/fulfillment-heavy.lock $(TARGET_DIR)/release/fulfillment-bench suite \
	  --out-dir $(TARGET_DIR)/bench --json $(TARGET_DIR)/bench/results.json
