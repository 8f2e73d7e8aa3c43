#!/usr/bin/env bash
# deploy/azure/deploy.sh — deploys an mkube cluster into one resource group.
#
#   deploy/azure/deploy.sh -g RG -l LOCATION --operator-prefix IPV6/64 [options]
#
# Builds the binaries (release), uploads them and the revival runbook to a
# storage account of the resource group, shows what the deployment would
# change (what-if) and asks before deploying main.bicep; then writes the
# mkctl context "azure-RG". Needs the az CLI, logged in (az login).
set -euo pipefail
cd "$(dirname "$0")/../.."

usage() {
    cat >&2 <<USAGE
usage: deploy/azure/deploy.sh -g RESOURCE_GROUP -l LOCATION --operator-prefix IPV6_PREFIX [options]
  -n, --name NAME           cluster name (default mkube)
  -m, --masters N           VMs running a master and a worker: 1, 3 or 5 (default 3)
  -w, --workers N           VMs running only a worker (default 0)
      --vm-size SIZE        default Standard_E2as_v5
      --ppg                 put the VMs in a proximity placement group
      --ssh-key FILE        default ~/.ssh/id_ed25519.pub
      --pki-dir DIR         the cluster CA and tokens (default: a new CA, kept in ~/.mkube/azure-RG/pki)
      --no-free-tier        the subscription already has its free-tier Cosmos DB account
      --build-in-docker     build the binaries in a Debian 12 container (rust:1-bookworm),
                            for an operator machine whose glibc is newer than Debian 12's
      --yes                 deploy without asking after what-if
USAGE
    exit 2
}

rg="" location="" name=mkube masters=3 workers=0 vm_size=Standard_E2as_v5 ppg=false
ssh_key="$HOME/.ssh/id_ed25519.pub" pki_dir="" free_tier=true yes=false operator="" in_docker=false
while [ $# -gt 0 ]; do
    case "$1" in
        -g) rg=$2; shift 2 ;;
        -l) location=$2; shift 2 ;;
        -n|--name) name=$2; shift 2 ;;
        -m|--masters) masters=$2; shift 2 ;;
        -w|--workers) workers=$2; shift 2 ;;
        --vm-size) vm_size=$2; shift 2 ;;
        --ppg) ppg=true; shift ;;
        --ssh-key) ssh_key=$2; shift 2 ;;
        --pki-dir) pki_dir=$2; shift 2 ;;
        --operator-prefix) operator=$2; shift 2 ;;
        --no-free-tier) free_tier=false; shift ;;
        --yes) yes=true; shift ;;
        --build-in-docker) in_docker=true; shift ;;
        *) usage ;;
    esac
done
[ -n "$rg" ] && [ -n "$location" ] && [ -n "$operator" ] || usage
command -v az >/dev/null || { echo "the az CLI is required: https://learn.microsoft.com/cli/azure/install-azure-cli" >&2; exit 1; }
az account show >/dev/null || { echo "not logged in: run az login" >&2; exit 1; }
[ -r "$ssh_key" ] || { echo "no SSH public key at $ssh_key (--ssh-key)" >&2; exit 1; }

state="$HOME/.mkube/azure-$rg"
mkdir -p "$state"
echo "==> building the binaries (release)"
# The VMs run Debian 12 (glibc 2.36): binaries linked against a newer glibc
# do not start there. Build on Debian 12 (or older), or in its container.
build=(cargo build --release --quiet -p master -p worker -p cli -p pki
    --bin mkube-master --bin mkube-worker --bin mkctl --bin mkube-pki)
if [ "$in_docker" = true ]; then
    docker run --rm -v "$PWD:/src" -w /src -e CARGO_TARGET_DIR=/src/target/bookworm \
        rust:1-bookworm "${build[@]}"
    release=target/bookworm/release
else
    glibc=$(ldd --version 2>/dev/null | head -1 | grep -oE '[0-9]+\.[0-9]+$' || echo unknown)
    if [ "$glibc" = unknown ] || [ "$(printf '%s\n2.36\n' "$glibc" | sort -V | tail -1)" != 2.36 ]; then
        echo "this machine's glibc ($glibc) is newer than Debian 12's (2.36) or unknown: binaries built here would not run on the VMs; pass --build-in-docker" >&2
        exit 1
    fi
    "${build[@]}"
    release=target/release
fi
# The cluster CA and the role tokens go to Key Vault, each secret readable
# only by the VMs that need it: workers read the CA certificate and the join
# token and have their certificates signed by a master (see the README).
pki_dir=${pki_dir:-$state/pki}
[ -s "$pki_dir/ca.crt" ] || "$release/mkube-pki" init "$pki_dir" --cluster "$name"
deploy/azure/bundle.sh "$state/mkube.tar.gz" "$release"

echo "==> resource group $rg in $location, and a storage account for the binaries and the runbook"
az group create --name "$rg" --location "$location" --output none
# Storage account names are global: derive it from the subscription too, so
# two users' groups of the same name do not collide.
subscription=$(az account show --query id -o tsv)
storage="mk$(echo -n "$subscription/$rg" | sha256sum | head -c 16)"
az storage account create --resource-group "$rg" --name "$storage" --location "$location" \
    --sku Standard_LRS --kind StorageV2 --allow-blob-public-access false --min-tls-version TLS1_2 --output none
key=$(az storage account keys list --resource-group "$rg" --account-name "$storage" --query '[0].value' -o tsv)
az storage container create --account-name "$storage" --account-key "$key" --name mkube --output none
az storage blob upload --account-name "$storage" --account-key "$key" --container-name mkube \
    --name mkube.tar.gz --file "$state/mkube.tar.gz" --overwrite --output none
az storage blob upload --account-name "$storage" --account-key "$key" --container-name mkube \
    --name start_mkube_vms.py --file deploy/azure/runbook/start_mkube_vms.py --overwrite --output none
# The SAS URLs go into every VM's custom data, which Azure refuses to change
# on an existing VM: their expiry is fixed at the first run (kept in the
# state directory), so a second run signs the same URLs and changes no VM.
expiry_file="$state/sas-expiry"
[ -s "$expiry_file" ] || date -u -d '+1 year' '+%Y-%m-%dT%H:%MZ' > "$expiry_file"
expiry=$(cat "$expiry_file")
sas() {
    az storage blob generate-sas --account-name "$storage" --account-key "$key" --container-name mkube \
        --name "$1" --permissions r --expiry "$expiry" --https-only --full-uri -o tsv
}
binaries_url=$(sas mkube.tar.gz)
runbook_url=$(sas start_mkube_vms.py)

# The revival schedules start an hour after the first run, fixed then (a
# new start time each run would change them). Automation refuses to create
# a job schedule for a runbook and schedule that already have one (409
# Conflict, whatever the name): only the first run creates them.
schedule_file="$state/schedule-start"
[ -s "$schedule_file" ] || date -u -d '+1 hour' '+%Y-%m-%dT%H:%M:%SZ' > "$schedule_file"
job_schedules=$(az rest --method get --url \
    "https://management.azure.com/subscriptions/$subscription/resourceGroups/$rg/providers/Microsoft.Automation/automationAccounts/$name-revival/jobSchedules?api-version=2023-11-01" \
    --query 'length(value)' -o tsv 2>/dev/null || echo 0)
create_job_schedules=true
[ "${job_schedules:-0}" -gt 0 ] && create_job_schedules=false

params=(
    clusterName="$name" masterCount="$masters" workerCount="$workers" vmSize="$vm_size"
    useProximityPlacementGroup="$ppg" sshPublicKey="$(cat "$ssh_key")" operatorIpv6Prefix="$operator"
    binariesUrl="$binaries_url" runbookUrl="$runbook_url"
    caCert="$(cat "$pki_dir/ca.crt")" caKey="$(cat "$pki_dir/ca.key")"
    memberToken="$(cat "$pki_dir/tokens/member")" joinToken="$(cat "$pki_dir/tokens/join")"
    userToken="$(cat "$pki_dir/tokens/user")" adminToken="$(cat "$pki_dir/tokens/admin")"
    viewerToken="$(cat "$pki_dir/tokens/viewer")"
    cosmosFreeTier="$free_tier"
    scheduleStart="$(cat "$schedule_file")" createJobSchedules="$create_job_schedules"
)
echo "==> what-if"
az deployment group what-if --resource-group "$rg" --template-file deploy/azure/main.bicep --parameters "${params[@]}"
if [ "$yes" != true ]; then
    read -r -p "deploy? [y/N] " answer
    [ "$answer" = y ] || { echo "nothing deployed"; exit 1; }
fi
echo "==> deploying"
az deployment group create --resource-group "$rg" --name mkube --template-file deploy/azure/main.bicep \
    --parameters "${params[@]}" --output none
ips=$(az deployment group show --resource-group "$rg" --name mkube --query 'properties.outputs.masterIpv6.value' -o tsv)
# shellcheck disable=SC2086 # one argument per address
MKCTL="$release/mkctl" deploy/azure/write-context.sh "azure-$rg" "$pki_dir" $ips
cat <<DONE
mkube is deploying on $masters master VM(s) and $workers worker VM(s) in $rg.
The VMs install Docker and start mkube through cloud-init (a few minutes); then:
    $release/mkctl --context azure-$rg cluster status
    $release/mkctl --context azure-$rg get nodes
Remove everything with: deploy/azure/teardown.sh -g $rg
DONE
