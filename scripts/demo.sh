#!/usr/bin/env bash
# The demo (make demo): a local four-province federation (Shanghai, Jiangsu, Zhejiang, Anhui)
# doing a real exchange end to end, as four `deltafed run` processes on 127.0.0.1 in a temp dir
# that is removed on exit (DEMO_KEEP=1 keeps it; DEMO_TIMEOUT sets each wait's deadline, default
# 30 s). Zhejiang publishes its business licences; Shanghai fetches them under a direct grant and
# runs a record query; Anhui asks for three fields, is approved and fetches the projection;
# Zhejiang revokes Shanghai's grant and Shanghai's next fetch is refused; both sides show and
# verify their provenance; scripts/verify-export.py checks Zhejiang's export on its own and
# rejects a tampered copy. Ends with `demo: OK`.
#
# The story is testnet/scenario.sh, which make testnet-scenario runs inside the compose
# federation; this runs it with the local runner (testnet/local.sh).
exec bash "$(dirname "$0")/../testnet/scenario.sh" local
