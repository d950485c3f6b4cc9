# The two commands a newcomer needs (run as root on Debian):
#   make demo   bring the lab up and run the demo
#   make test   run every test: unit, property and the lab's end-to-end tests
# Go and Cargo keep their caches in their usual places (~/go, ~/.cache,
# ~/.cargo, ./target); the lab caches its Kubernetes build in /var/cache/kvip-lab.

CARGO ?= cargo

.PHONY: demo test deps build lint deny

deps:
	./scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace --bins

demo: build
	./target/debug/kvip-lab demo

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Licences, bans and sources of every crate; advisories when the RustSec
# database can be had (scripts/deny.sh says loudly when it cannot).
deny: deps
	./scripts/deny.sh

test: build lint deny
	$(CARGO) test --workspace --lib --bins
	$(CARGO) test -p kvip-core --test kube_vip_coverage
	$(CARGO) test -p kvip --test static_binary
	$(CARGO) test -p kvip --test image
	$(CARGO) test -p kvip --test helm_chart
	$(CARGO) test -p kvip-lab --test lab_e2e
	$(CARGO) test -p kvip-lab --test services_e2e
	$(CARGO) test -p kvip-lab --test status_e2e
	$(CARGO) test -p kvip-lab --test cp_e2e
	$(CARGO) test -p kvip-lab --test failures_e2e
	$(CARGO) test -p kvip-lab --test membership_e2e
	$(CARGO) test -p kvip-lab --test network_e2e
	$(CARGO) test -p kvip-lab --test governance_e2e
	$(CARGO) test -p kvip-lab --test rbac_e2e
	$(CARGO) test -p kvip-lab --test kube_vip_manifests_e2e
	$(CARGO) test -p kvip-lab --test migration_e2e
	$(CARGO) test -p kvip-lab --test pools_e2e
	$(CARGO) test -p kvip-lab --test ipam_e2e
