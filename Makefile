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
