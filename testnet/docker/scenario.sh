#!/usr/bin/env bash
# The demo exchange inside the compose federation (make testnet-scenario; make testnet-up first):
# the story of make demo (testnet/scenario.sh), every command run in the member's own container
# (`docker exec`, like `docker compose exec -T MEMBER /deltafed ...`), files copied out with
# `docker cp` and checked here. It can run again on the same federation (the dataset gets a new
# version). Ends with `scenario: OK`.
exec bash "$(dirname "$0")/../scenario.sh" docker
