#!/usr/bin/env bash
# deploy/azure/write-context.sh — writes the operator's mkctl context for a
# deployed cluster (deploy.sh runs it after deploying; the rehearsal runs it
# in its operator container).
#
#   deploy/azure/write-context.sh CONTEXT PKI_DIR MASTER_IPV6...
#
# The masters are dialled at their public IPv6 addresses, port 7000; their
# certificates all carry the shared name masters.mkube, which mkctl checks
# instead of the address. mkctl is $MKCTL, else the one on PATH.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 CONTEXT PKI_DIR MASTER_IPV6..." >&2; exit 2; }
context=$1 pki_dir=$2
shift 2
mkctl=${MKCTL:-mkctl}
for file in ca.crt tokens/admin; do
    [ -s "$pki_dir/$file" ] || { echo "$pki_dir/$file is missing or empty" >&2; exit 1; }
done
servers=$(for ip in "$@"; do printf '[%s]:7000,' "$ip"; done | sed 's/,$//')
"$mkctl" config set-context "$context" --servers "$servers" \
    --token-file "$pki_dir/tokens/admin" --certificate-authority "$pki_dir/ca.crt" \
    --tls-server-name masters.mkube
