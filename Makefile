# Entry points; each script installs what it needs.
.PHONY: test
test:
	bash scripts/test.sh

# A local 4-province federation doing a real exchange, end to end (temp dir, cleaned up).
.PHONY: demo
demo:
	bash scripts/demo.sh

# The benchmark suite in release mode: one table with baselines and ratios, also as JSON.
.PHONY: bench
bench:
	bash scripts/bench.sh

# The static release binary and the FROM scratch image (deltafed:dev) built from it.
.PHONY: static image
static:
	bash scripts/build-static.sh
image:
	bash deploy/build-image.sh

# The 4-province federation under docker compose (testnet/docker-compose.yml): up from nothing
# (build, image, keys, containers, all connected), the demo exchange inside it, the faults, down
# (containers, network, volumes). testnet-docker runs all of them, as CI does, and always downs.
.PHONY: testnet-up testnet-scenario testnet-faults testnet-down testnet-docker
testnet-up:
	bash testnet/docker/up.sh
testnet-scenario:
	bash testnet/docker/scenario.sh
testnet-faults:
	bash testnet/docker/faults.sh
testnet-down:
	bash testnet/docker/down.sh
testnet-docker:
	bash testnet/docker/all.sh
