#!/usr/bin/env bash
# Tears the compose federation down: every container (the intruder's too), the network and the
# volumes (keys, databases). The image stays; `docker image rm deltafed:dev` removes it.
#
#   testnet/docker/down.sh        # or: make testnet-down
NO_LOGS=1
source "$(dirname "$0")/lib.sh"
require_engine
echo "\$ testnet/docker/compose.sh --profile intruder down --volumes --remove-orphans --timeout 30"
compose --profile intruder down --volumes --remove-orphans --timeout 30 || die "compose down failed (see above)"
left=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")
[ -z "$left" ] || die "containers of project $PROJECT are left: $left"
vols=$(docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")
[ -z "$vols" ] || die "volumes of project $PROJECT are left: $vols"
nets=$(docker network ls -q --filter "label=com.docker.compose.project=$PROJECT")
[ -z "$nets" ] || die "networks of project $PROJECT are left: $nets"
finish
