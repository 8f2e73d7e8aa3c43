//! The Azure templates (`deploy/azure/`): syntax, schemas and agreement of
//! the Bicep and ARM JSON forms (`check_templates.py`, which also proves it
//! refuses known-bad variants), and the properties mkube depends on.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn azure() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/azure")
}

fn template() -> Value {
    let text = std::fs::read_to_string(azure().join("azuredeploy.json")).expect("azuredeploy.json");
    serde_json::from_str(&text).expect("azuredeploy.json is JSON")
}

fn resources<'a>(t: &'a Value, kind: &str) -> Vec<&'a Value> {
    t["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["type"] == kind)
        .collect()
}

fn one<'a>(t: &'a Value, kind: &str) -> &'a Value {
    let found = resources(t, kind);
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}

#[test]
fn the_templates_parse_validate_and_agree() {
    let out = Command::new("python3")
        .arg(azure().join("check_templates.py"))
        .output()
        .expect("running python3 (scripts/test installs the modules it needs)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check_templates.py found problems:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("ok:"), "{stdout}");
}

#[test]
fn the_properties_mkube_depends_on_are_set() {
    let t = template();
    // Spot VMs that come back: deallocated (not deleted) on eviction, never
    // evicted for price, with an identity for Key Vault.
    let vm = one(&t, "Microsoft.Compute/virtualMachines");
    assert_eq!(vm["properties"]["priority"], "Spot");
    assert_eq!(vm["properties"]["evictionPolicy"], "Deallocate");
    assert_eq!(vm["properties"]["billingProfile"]["maxPrice"], -1);
    assert_eq!(vm["identity"]["type"], "SystemAssigned");
    assert_eq!(
        t["parameters"]["vmSize"]["defaultValue"],
        "Standard_E2as_v5"
    );
    assert!(
        vm["tags"]["mkube-cluster"].is_string(),
        "the runbook finds VMs by tag"
    );
    // Each VM has a public IPv6 address (the operator's way in) and a
    // public IPv4 address for egress (ARM and registries answer over IPv4;
    // the subnet has no default outbound access).
    let ips = resources(&t, "Microsoft.Network/publicIPAddresses");
    let mut versions: Vec<&str> = ips
        .iter()
        .filter_map(|ip| ip["properties"]["publicIPAddressVersion"].as_str())
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, ["IPv4", "IPv6"]);
    for ip in &ips {
        assert_eq!(ip["copy"]["count"], "[variables('vmCount')]");
        assert_eq!(ip["sku"]["name"], "Standard");
    }
    let nic = one(&t, "Microsoft.Network/networkInterfaces");
    let v4 = &nic["properties"]["ipConfigurations"][0]["properties"];
    assert_eq!(v4["privateIPAddressVersion"], "IPv4");
    assert!(
        v4["publicIPAddress"]["id"]
            .as_str()
            .is_some_and(|id| id.contains("-ipv4")),
        "the IPv4 configuration has the public IPv4 address: {v4}"
    );
    // The proximity placement group is optional.
    let ppg = one(&t, "Microsoft.Compute/proximityPlacementGroups");
    assert_eq!(
        ppg["condition"],
        "[parameters('useProximityPlacementGroup')]"
    );
    assert_eq!(
        t["parameters"]["useProximityPlacementGroup"]["defaultValue"],
        false
    );
    // Key Vault: a name of at most 24 characters whatever the cluster's
    // name ("kv-" and a 13-character uniqueString).
    assert_eq!(
        t["variables"]["vaultName"],
        "[format('kv-{0}', uniqueString(resourceGroup().id, parameters('clusterName')))]"
    );
    // RBAC, reachable only from the cluster's subnet.
    let vault = one(&t, "Microsoft.KeyVault/vaults");
    assert_eq!(vault["properties"]["enableRbacAuthorization"], true);
    let acls = &vault["properties"]["networkAcls"];
    assert_eq!(acls["defaultAction"], "Deny");
    assert_eq!(acls["bypass"], "AzureServices");
    assert_eq!(
        acls["virtualNetworkRules"][0]["id"],
        "[variables('subnetId')]"
    );
    let vnet = one(&t, "Microsoft.Network/virtualNetworks");
    let endpoints: Vec<&str> = vnet["properties"]["subnets"][0]["properties"]["serviceEndpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["service"].as_str())
        .collect();
    assert!(
        endpoints.contains(&"Microsoft.KeyVault") && endpoints.contains(&"Microsoft.AzureCosmosDB"),
        "{endpoints:?}"
    );
    // Cosmos DB on the free tier, with the containers the masters use.
    let cosmos = one(&t, "Microsoft.DocumentDB/databaseAccounts");
    assert_eq!(
        cosmos["properties"]["enableFreeTier"],
        "[parameters('cosmosFreeTier')]"
    );
    assert_eq!(t["parameters"]["cosmosFreeTier"]["defaultValue"], true);
    assert_eq!(
        cosmos["properties"]["capacity"]["totalThroughputLimit"], 1000,
        "stays within the free 1000 RU/s"
    );
    let containers = resources(
        &t,
        "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers",
    );
    assert_eq!(containers.len(), 2);
    for c in &containers {
        assert_eq!(
            c["properties"]["resource"]["partitionKey"]["paths"][0],
            "/pk"
        );
    }
    // Automation: four hourly schedules 15 minutes apart, each bound to the
    // runbook by a GUID-named job schedule; its identity may start VMs.
    let schedules = one(&t, "Microsoft.Automation/automationAccounts/schedules");
    assert_eq!(schedules["copy"]["count"], 4);
    assert_eq!(schedules["properties"]["frequency"], "Hour");
    assert_eq!(schedules["properties"]["interval"], 1);
    assert!(
        schedules["properties"]["startTime"]
            .as_str()
            .is_some_and(|s| s.contains("mul(15, copyIndex())")),
        "{}",
        schedules["properties"]["startTime"]
    );
    let jobs = one(&t, "Microsoft.Automation/automationAccounts/jobSchedules");
    assert_eq!(jobs["copy"]["count"], 4);
    assert!(jobs["name"].as_str().is_some_and(|n| n.contains("guid(")));
    let runbook = one(&t, "Microsoft.Automation/automationAccounts/runbooks");
    // Python: the rehearsal runs the very file (no PowerShell can be
    // installed here); its command line is the job schedule's parameters.
    assert_eq!(runbook["properties"]["runbookType"], "Python3");
    for key in ["SubscriptionId", "ResourceGroupName", "ClusterName"] {
        assert!(
            jobs["properties"]["parameters"].get(key).is_some(),
            "the job schedule passes {key}"
        );
    }
    // Revival holds a custom role: read VMs, their instance view, start
    // them; nothing else (no run-command, no write), on the resource group.
    let revival = one(&t, "Microsoft.Authorization/roleDefinitions");
    assert_eq!(
        revival["properties"]["permissions"][0]["actions"],
        serde_json::json!([
            "Microsoft.Compute/virtualMachines/read",
            "Microsoft.Compute/virtualMachines/instanceView/read",
            "Microsoft.Compute/virtualMachines/start/action"
        ])
    );
    assert_eq!(
        revival["properties"]["assignableScopes"],
        serde_json::json!(["[resourceGroup().id]"])
    );
    let assignments = resources(&t, "Microsoft.Authorization/roleAssignments");
    let text = serde_json::to_string(&t).unwrap_or_default();
    assert!(
        !text.contains("9980e02c-c2be-4d73-94e8-173b1dc7cf3c"),
        "Virtual Machine Contributor is granted"
    );
    let starters: Vec<&&Value> = assignments
        .iter()
        .filter(|r| {
            r["properties"]["roleDefinitionId"]
                .as_str()
                .is_some_and(|id| id.contains("mkube-revival"))
        })
        .collect();
    assert_eq!(starters.len(), 2, "the masters and the runbook");
    // Key Vault access per secret: every VM reads the CA certificate and
    // the join token; only the masters read anything else; nothing is
    // granted on the whole vault.
    let mut secret_readers = std::collections::BTreeMap::new();
    for r in &assignments {
        if !r["properties"]["roleDefinitionId"]
            .as_str()
            .is_some_and(|id| id.contains("keyVaultSecretsUser"))
        {
            continue;
        }
        let scope = r["scope"].as_str().unwrap_or_default();
        assert!(scope.contains("/secrets/"), "a vault-wide grant: {scope}");
        let secret = scope
            .rsplit_once(", '")
            .map(|(_, s)| s.trim_end_matches("')]").to_string())
            .unwrap_or_default();
        secret_readers.insert(
            secret,
            r["copy"]["count"].as_str().unwrap_or("").to_string(),
        );
    }
    let every_vm = "[variables('vmCount')]";
    let masters = "[parameters('masterCount')]";
    let expected: std::collections::BTreeMap<String, String> = [
        ("mkube-ca-crt", every_vm),
        ("mkube-join-token", every_vm),
        ("mkube-ca-key", masters),
        ("mkube-member-token", masters),
        ("mkube-admin-token", masters),
        ("mkube-user-token", masters),
        ("mkube-viewer-token", masters),
        ("cosmos-key", masters),
    ]
    .into_iter()
    .map(|(s, c)| (s.to_string(), c.to_string()))
    .collect();
    assert_eq!(secret_readers, expected);
    // The operator reaches the masters at their public IPv6 addresses: the
    // API and the Grafana datasource listen on both families ([::] is
    // dual-stack on Linux), not on IPv4 only.
    let cloud_init = t["variables"]["cloudInit"].as_str().unwrap_or_default();
    for listen in ["--listen [::]:7000", "--grafana-listen [::]:3100"] {
        assert!(cloud_init.contains(listen), "cloud-init lacks {listen}");
    }
    // The worker of a master's VM hands over through that master at the
    // VM's private address, which the master's certificate names (its
    // certificate does not name 127.0.0.1).
    let custom = vm["properties"]["osProfile"]["customData"]
        .as_str()
        .unwrap_or_default();
    assert!(
        custom.contains("'__IP__', format('10.42.0.{0}', add(10, copyIndex()))")
            && custom.contains("format('--local-master 10.42.0.{0}:7000', add(10, copyIndex()))")
            && !custom.contains("127.0.0.1"),
        "{custom}"
    );
    // The worker isolates pods on Azure (the metadata address is the VM's
    // identity).
    assert!(
        t["variables"]["cloudInit"]
            .as_str()
            .is_some_and(|c| c.contains("--pod-isolation on")),
        "cloud-init starts the worker with --pod-isolation on"
    );
}

/// Grafana expands `$VAR` and `${VAR}` in provisioning files, not the
/// shell's `${VAR:-default}` (which it would pass on verbatim).
#[test]
fn the_grafana_provisioning_uses_only_what_grafana_expands() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/provisioning");
    let mut checked = 0;
    for sub in ["datasources", "dashboards"] {
        for entry in std::fs::read_dir(dir.join(sub)).expect("provisioning directory") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("readable");
            for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
                assert!(
                    !line.contains(":-") || !line.contains("${"),
                    "{}: Grafana does not expand {line:?}",
                    path.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 2, "{checked} files");
}

/// What an ARM expression depends on: the parameters and functions it
/// names, through the variables it uses (expanded), as `parameters('x')`,
/// `utcNow`, ...
fn dependencies(t: &Value, expression: &str, seen: &mut std::collections::BTreeSet<String>) {
    let mut rest = expression;
    while let Some(at) = rest.find("parameters('") {
        let name = &rest[at + 12..];
        let end = name.find('\'').unwrap_or(name.len());
        seen.insert(format!("parameters('{}')", &name[..end]));
        rest = &name[end..];
    }
    for function in ["utcNow", "newGuid"] {
        if expression.contains(function) {
            seen.insert(function.to_string());
        }
    }
    let mut rest = expression;
    while let Some(at) = rest.find("variables('") {
        let name = &rest[at + 11..];
        let end = name.find('\'').unwrap_or(name.len());
        let variable = &name[..end];
        if seen.insert(format!("variables('{variable}')")) {
            let value = t["variables"][variable].to_string();
            dependencies(t, &value, seen);
        }
        rest = &name[end..];
    }
}

/// A second `deploy.sh` run that adds a worker (`workerCount` + 1) must
/// change no existing VM's custom data (Azure refuses to) nor any
/// job-schedule name: neither may depend on the worker count, the VM count,
/// the time or a fresh GUID. (The binaries' URL is a parameter that
/// `deploy.sh` keeps the same from run to run: the SAS expiry of the first.)
#[test]
fn a_second_run_that_adds_a_worker_changes_no_custom_data_and_no_job_schedule_name() {
    let t = template();
    let volatile = [
        "parameters('workerCount')",
        "variables('vmCount')",
        "parameters('scheduleStart')",
        "utcNow",
        "newGuid",
    ];
    let vm = one(&t, "Microsoft.Compute/virtualMachines");
    let jobs = one(&t, "Microsoft.Automation/automationAccounts/jobSchedules");
    for (what, expression) in [
        (
            "a VM's custom data",
            vm["properties"]["osProfile"]["customData"].to_string(),
        ),
        ("a VM's name", vm["name"].to_string()),
        ("a job schedule's name", jobs["name"].to_string()),
    ] {
        let mut seen = std::collections::BTreeSet::new();
        dependencies(&t, &expression, &mut seen);
        for v in volatile {
            assert!(!seen.contains(v), "{what} depends on {v}: {seen:?}");
        }
    }
    // Workers come after the masters: a new one is appended, no existing
    // VM changes index (its name, address or role).
    let custom = vm["properties"]["osProfile"]["customData"]
        .as_str()
        .unwrap_or_default();
    assert!(
        custom.contains("if(less(copyIndex(), parameters('masterCount')), 'master', 'worker')"),
        "{custom}"
    );
    assert_eq!(
        t["variables"]["vmCount"],
        "[add(parameters('masterCount'), parameters('workerCount'))]"
    );
    // Automation refuses to create a job schedule again (409 Conflict,
    // whatever its name): a second run leaves them be. deploy.sh asks ARM
    // whether they exist, and keeps the schedules' start time of the first
    // run.
    assert_eq!(jobs["condition"], "[parameters('createJobSchedules')]");
    let deploy = include_str!("../../deploy/azure/deploy.sh");
    for needle in [
        "createJobSchedules=\"$create_job_schedules\"",
        "scheduleStart=\"$(cat \"$schedule_file\")\"",
        "[ -s \"$schedule_file\" ] ||",
        "/jobSchedules?api-version=2023-11-01",
    ] {
        assert!(deploy.contains(needle), "deploy.sh: {needle}");
    }
}
