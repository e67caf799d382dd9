# ephemera: the commands people and CI use. See README.md.
SHELL := /usr/bin/env bash

.PHONY: help cluster-up cluster-down test lint demo build controlplane-bins crds bench chaos
.PHONY: image deploy

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

bench: ## ephemera vs the direct floor: `make bench N=100 [CONCURRENCY=16] [IDLE=60] [ROUNDS=3] [PROFILE=dev]` (release build by default; writes bench/results/)
	@N=$(N) CONCURRENCY=$(CONCURRENCY) IDLE=$(IDLE) ROUNDS=$(ROUNDS) PROFILE=$(PROFILE) hack/bench.sh

FAULT_KILLS ?= 40
FAULT_INSTALLATIONS ?= 60
chaos: ## the fault suite, longer (FAULT_KILLS, FAULT_INSTALLATIONS, FAULT_SEED; docs/security.md)
	@hack/cluster-up.sh
	FAULT_KILLS=$(FAULT_KILLS) FAULT_INSTALLATIONS=$(FAULT_INSTALLATIONS) \
		EPHEMERA_KUBECONFIG=$(CURDIR)/.cluster/kubeconfig \
		cargo test --locked --test faults -- --nocapture --test-threads=1

image: ## build the OCI image with buildah from the release binary, check it, write target/image/ephemera.oci.tar
	@hack/image.sh

deploy: ## regenerate deploy/ (plain manifests) from the chart (a test fails when stale)
	UPDATE_DEPLOY=1 EPHEMERA_HELM=$$(hack/build-controlplane.sh)/bin/helm \
		cargo test --locked --test deploy deploy_manifests_are_current
