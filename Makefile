# Entry points; each script installs what it needs.
.PHONY: test
test:
	bash scripts/test.sh

# A local 4-province federation doing a real exchange, end to end (temp dir, cleaned up).
.PHONY: demo
demo:
	bash scripts/demo.sh
