#!/usr/bin/env python3
"""Starts the deallocated (evicted) VMs of an mkube cluster.

The safety net behind the masters' own peer revival: the template publishes
this file as the Python 3 runbook "Start-MkubeVms" of the cluster's
Automation account and runs it every 15 minutes (four hourly schedules,
offset). It runs under the account's system-assigned managed identity, which
holds the custom role "mkube revival" on the resource group (read VMs and
their instance view, start them). Spot capacity may be missing: a VM that
fails to start is tried again at the next run.

Arguments, in order (Automation passes a Python runbook's parameters as its
command line): SUBSCRIPTION_ID RESOURCE_GROUP CLUSTER_NAME.

Only the standard library: ARM's REST API (api-version 2024-07-01) with a
token from the Automation sandbox's identity endpoint (IDENTITY_ENDPOINT and
IDENTITY_HEADER). The rehearsal (tests/src/rehearsal) runs this very file
against its ARM double.
"""

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

ARM = "https://management.azure.com"
API_VERSION = "2024-07-01"


def token():
    """An ARM token for the Automation account's managed identity."""
    endpoint = os.environ.get("IDENTITY_ENDPOINT")
    header = os.environ.get("IDENTITY_HEADER")
    if not endpoint or not header:
        sys.exit("no IDENTITY_ENDPOINT/IDENTITY_HEADER: enable the Automation account's "
                 "system-assigned identity")
    query = urllib.parse.urlencode({"resource": ARM + "/", "api-version": "2019-08-01"})
    request = urllib.request.Request(
        endpoint + "?" + query, headers={"X-IDENTITY-HEADER": header, "Metadata": "true"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["access_token"]


def get(url, bearer):
    """GET an ARM URL; its decoded JSON."""
    request = urllib.request.Request(url, headers={"Authorization": "Bearer " + bearer})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def start(url, bearer):
    """POST an ARM action (202 Accepted: the VM starts in the background)."""
    request = urllib.request.Request(
        url, data=b"", method="POST", headers={"Authorization": "Bearer " + bearer})
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()


def power_state(vm):
    """The VM's PowerState/* code from the list's instance view."""
    statuses = vm.get("properties", {}).get("instanceView", {}).get("statuses", [])
    for status in statuses:
        code = status.get("code", "")
        if code.startswith("PowerState/"):
            return code[len("PowerState/"):]
    return "unknown"


def main(argv):
    if len(argv) != 4:
        sys.exit("usage: start_mkube_vms.py SUBSCRIPTION_ID RESOURCE_GROUP CLUSTER_NAME")
    subscription, group, cluster = argv[1:]
    base = "%s/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/virtualMachines" % (
        ARM, urllib.parse.quote(subscription), urllib.parse.quote(group))
    version = "api-version=" + API_VERSION
    bearer = token()
    vms = []
    url = "%s?%s&statusOnly=true" % (base, version)
    while url:
        page = get(url, bearer)
        vms.extend(page.get("value", []))
        url = page.get("nextLink")
    failed = 0
    for vm in vms:
        if (vm.get("tags") or {}).get("mkube-cluster") != cluster:
            continue
        name, state = vm["name"], power_state(vm)
        if state in ("deallocated", "stopped"):
            print("starting %s (%s)" % (name, state))
            try:
                start("%s/%s/start?%s" % (base, urllib.parse.quote(name), version), bearer)
            except urllib.error.HTTPError as e:
                failed += 1
                print("cannot start %s now: %s %s" % (name, e.code, e.read()[:500]),
                      file=sys.stderr)
        else:
            print("%s: %s" % (name, state))
    sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
