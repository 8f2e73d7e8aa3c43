#!/usr/bin/env bash
# deploy/azure/teardown.sh -g RESOURCE_GROUP — deletes the cluster's resource
# group (VMs, disks, addresses, network, Key Vault, Cosmos DB, Automation,
# the storage account) and purges the soft-deleted Key Vault, so that its
# name and the subscription's Cosmos DB free tier can be used again.
set -euo pipefail
[ "${1:-}" = -g ] && [ -n "${2:-}" ] || { echo "usage: deploy/azure/teardown.sh -g RESOURCE_GROUP" >&2; exit 2; }
rg=$2
vaults=$(az keyvault list --resource-group "$rg" --query '[].name' -o tsv 2>/dev/null || true)
az group delete --name "$rg" --yes
for v in $vaults; do
    az keyvault purge --name "$v" || echo "purging Key Vault $v failed; it is purged by itself after 7 days" >&2
done
rm -rf "$HOME/.mkube/azure-$rg"
mkctl_bin="$(dirname "$0")/../../target/release/mkctl"
[ -x "$mkctl_bin" ] && "$mkctl_bin" config delete-context "azure-$rg" || true
echo "resource group $rg deleted"
