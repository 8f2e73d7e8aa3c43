#!/usr/bin/env bash
# deploy/azure/bundle.sh — packs what every VM fetches at its first boot
# (cloud-init's __BINARIES_URL__): the binaries, the Grafana secrets helper,
# and deploy/grafana (the dashboard and its provisioning).
#
#   deploy/azure/bundle.sh OUT.tar.gz BIN_DIR
#
# BIN_DIR holds mkube-master, mkube-worker and mkctl built for Debian 12
# (deploy.sh: target/release; the rehearsal: its test build).
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 OUT.tar.gz BIN_DIR" >&2; exit 2; }
out=$1 bin=$2
here="$(cd "$(dirname "$0")" && pwd)"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
for b in mkube-master mkube-worker mkctl; do
    [ -x "$bin/$b" ] || { echo "$bin/$b is not built" >&2; exit 1; }
    cp "$bin/$b" "$stage/"
done
cp "$here/bin/mkube-grafana-secrets" "$stage/"
cp -r "$here/../grafana" "$stage/grafana"
tar -czf "$out" -C "$stage" .
