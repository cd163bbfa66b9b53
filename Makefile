# Entry points; each script installs what it needs.
.PHONY: test
test:
	bash scripts/test.sh
