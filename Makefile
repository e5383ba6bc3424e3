# CoffeeBus — every entry point a developer, CI or an SRE needs.
# `make run` and `make test` are the two set-up commands of the README; both install first.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

UV_VERSION ?= 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
PYTEST_ARGS ?=
FUZZ_ARGS ?=

.PHONY: help install run test chaos test-fast lint format docs proto vendor services-up services-down \
        services-status topology-apply bench-bus fuzz clean k8s-tools k8s-build
help: ## List the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  make %-16s %s\n", $$1, $$2}'

install: ## Install uv (when missing) and the locked dependencies into .venv, byte-compiled (a quick start)
	@if ! $(UV) --version >/dev/null 2>&1; then \
	  echo "install: uv not found, installing uv==$(UV_VERSION) with pip"; \
	  python3 -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"; \
	fi
	$(UV) sync --frozen --compile-bytecode

run: install ## Start every role in one process on the embedded bus and stores
	$(UV) run coffeebus run

test: install services-up k8s-tools lint ## Start the real services, lint, and run every test
	$(UV) run pytest $(PYTEST_ARGS)

chaos: install services-up ## Fault tests under load (tests/chaos); prints faults=N lost= duplicated= out_of_order= last
	$(UV) run pytest -m chaos $(PYTEST_ARGS)

fuzz: install ## Fuzz the frame codec and connection core: >= 1M inputs, bounded (< 10 min)
	$(UV) run python -m tests.security.fuzz_run $(FUZZ_ARGS)

.PHONY: soak
SOAK_ARGS ?=
soak: install services-up ## 10 min at half the measured capacity on private services: memory flat, lag bounded, no error growth (SOAK_ARGS="--minutes 1") → bench/results/soak.json
	$(UV) run python -m tests.chaos.soak $(SOAK_ARGS)

# The Redis Cluster profile: three masters with a replica each on 7000-7005 (services.sh,
# COFFEEBUS_REDIS_NODES=6), beside the single Redis that `make test` and CI use.
REDIS_CLUSTER_PORT ?= 7000
REDIS_CLUSTER_URL := redis+cluster://127.0.0.1:$(REDIS_CLUSTER_PORT),127.0.0.1:$(shell echo $$(($(REDIS_CLUSTER_PORT) + 1)))
.PHONY: test-redis-cluster redis-cluster-up redis-cluster-down
redis-cluster-up: ## Start (cached, idempotent) the Redis Cluster profile: 3 masters + 3 replicas on 7000-7005
	COFFEEBUS_REDIS_NODES=6 COFFEEBUS_REDIS_PORT=$(REDIS_CLUSTER_PORT) bash services/services.sh up redis

redis-cluster-down: ## Stop the Redis Cluster profile
	COFFEEBUS_REDIS_NODES=6 COFFEEBUS_REDIS_PORT=$(REDIS_CLUSTER_PORT) bash services/services.sh down redis

test-redis-cluster: install services-up redis-cluster-up ## Every real-services test that touches Redis (not chaos), on the Redis Cluster profile
	REDIS_URL=$(REDIS_CLUSTER_URL) $(UV) run pytest -m "redis and not chaos" $(PYTEST_ARGS)

# The replicated Kafka profile: three KRaft brokers on 9192/9194/9196 (controllers 9193/9195/
# 9197; run state in run/kafka-cluster), topics applied with the production overlay
# (topology.prod.yaml: replication 3, min.insync.replicas 2, no unclean leader election).
KAFKA_CLUSTER_PORT ?= 9192
KAFKA_CLUSTER_ENV = KAFKA_RUN_DIR=$${COFFEEBUS_HOME:-$$HOME/.cache/coffeebus}/run/kafka-cluster \
	COFFEEBUS_KAFKA_NODES=3 COFFEEBUS_KAFKA_PORT=$(KAFKA_CLUSTER_PORT) \
	COFFEEBUS_KAFKA_CONTROLLER_PORT=$(shell echo $$(($(KAFKA_CLUSTER_PORT) + 1)))
KAFKA_CLUSTER_BOOTSTRAP := $(shell p=$(KAFKA_CLUSTER_PORT); echo 127.0.0.1:$$p,127.0.0.1:$$((p + 2)),127.0.0.1:$$((p + 4)))
.PHONY: kafka-cluster-up kafka-cluster-down
kafka-cluster-up: install ## Start the replicated Kafka profile (3 brokers, 9192-9197) and apply topology.yaml + topology.prod.yaml
	$(KAFKA_CLUSTER_ENV) bash services/services.sh up kafka
	KAFKA_BOOTSTRAP_SERVERS=$(KAFKA_CLUSTER_BOOTSTRAP) $(UV) run coffeebus topology apply --overlay topology.prod.yaml

kafka-cluster-down: ## Stop the replicated Kafka profile
	$(KAFKA_CLUSTER_ENV) bash services/services.sh down kafka

test-fast: ## Run the tests without reinstalling or restarting services
	$(UV) run pytest -x -q $(PYTEST_ARGS)

lint: ## ruff (lint + format check) and mypy --strict
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy

format: ## Apply ruff's fixes and formatting
	$(UV) run ruff check --fix .
	$(UV) run ruff format .

docs: install ## Regenerate the generated docs: the settings tables of docs/operations.md, the events' JSON Schema and AsyncAPI
	$(UV) run python -m coffeebus.settingsdoc
	$(UV) run coffeebus events docs

proto: ## Regenerate schemas/pb from schemas/proto with the pinned protoc
	$(UV) run python -m schemas.generate

vendor: ## Re-vendor the browser libraries the API serves: protobuf.js, long.js (web demo), ReDoc (/schema); npm, producers/static/package-lock.json
	$(UV) run python -m producers.vendor

services-up: ## Install (cached) and start Kafka, Redis and FerretDB on loopback
	bash services/services.sh up

services-down: ## Stop the services services-up started
	bash services/services.sh down

services-status: ## Show whether each service runs and answers
	bash services/services.sh status

k8s-tools: ## Build the pinned kustomize from the Go module proxy, once (deploy/k8s/kustomize.sh)
	bash deploy/k8s/kustomize.sh install

K8S_OVERLAY ?= deploy/k8s/overlays/production
k8s-build: k8s-tools ## Render the Kubernetes manifests of K8S_OVERLAY (needs its secrets.env)
	bash deploy/k8s/kustomize.sh build $(K8S_OVERLAY)

topology-apply: install ## Create/raise/configure every topic of topology.yaml on the broker
	$(UV) run coffeebus topology apply

bench-bus: install services-up ## KafkaBus vs raw aiokafka throughput on the local broker
	$(UV) run python -m bench.bus_bench

.PHONY: bench-login-flood
LOGIN_FLOOD_ARGS ?=
bench-login-flood: install ## Logged-in users' c2c and heartbeat latency during a wrong-password flood → bench/results/login_flood.json
	$(UV) run python -m bench.login_flood $(LOGIN_FLOOD_ARGS)

BENCH_MODE ?= quick
.PHONY: bench bench-full bench-report

bench: install services-up ## Every scenario, embedded and real services (BENCH_MODE=quick|full) → bench/results/latest.json, docs/benchmarks.md
	$(UV) run python -m bench.run --mode $(BENCH_MODE)

bench-full: ## make bench in full mode (longer steps, bigger runs)
	$(MAKE) bench BENCH_MODE=full

bench-report: ## Regenerate the plots and docs/benchmarks.md from bench/results/latest.json
	$(UV) run python -m bench.report

clean: ## Remove caches of the tools (not the services' cache)
	rm -rf .mypy_cache .ruff_cache .pytest_cache .hypothesis
