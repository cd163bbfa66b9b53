#!/usr/bin/env bash
# `docker compose` (or `docker-compose` 1.x where the plugin is missing) for the testnet: the
# project name (DELTAFED_COMPOSE_PROJECT, default deltafed) and testnet/docker-compose.yml are
# passed for you, from any directory. Examples:
#   testnet/docker/compose.sh ps
#   testnet/docker/compose.sh logs -f zhejiang
#   testnet/docker/compose.sh exec zhejiang /deltafed status
NO_LOGS=1
source "$(dirname "$0")/lib.sh"
trap - ERR
exec "${COMPOSE_CMD[@]}" -p "$PROJECT" -f "$COMPOSE_FILE" "$@"
