# ephemera: the commands people and CI use. See README.md.
SHELL := /usr/bin/env bash

.PHONY: help cluster-up cluster-down test lint demo build controlplane-bins crds bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

cluster-up: ## start the local control plane (builds it on first use)
	@hack/cluster-up.sh

cluster-down: ## stop the local control plane
	@hack/cluster-down.sh

controlplane-bins: ## build (or find cached) the control plane binaries
	@hack/build-controlplane.sh >/dev/null

build: ## build the ephemera binary
	cargo build --locked

lint: ## rustfmt and clippy, warnings are errors
	cargo fmt --all -- --check
	cargo clippy --locked --all-targets -- -D warnings

test: ## every test: unit tests, then integration tests on the local control plane
	@hack/test.sh

demo: ## the main job on the local control plane
	@hack/demo.sh

crds: ## regenerate crds/ from the Rust types
	UPDATE_CRDS=1 cargo test --locked --test crds_are_current

bench: ## ephemera vs the direct floor: `make bench N=100 [CONCURRENCY=16] [IDLE=60] [PROFILE=dev]` (release build by default; writes bench/results/)
	@N=$(N) CONCURRENCY=$(CONCURRENCY) IDLE=$(IDLE) PROFILE=$(PROFILE) hack/bench.sh
