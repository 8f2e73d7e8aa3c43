//! The real `mkctl` binary against a real cluster: three `mkube-master`
//! processes and two `mkube-worker` processes on the real Docker daemon,
//! over TLS with the cluster's CA in the context.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tests::cluster::{Cluster, Timing, bin_dir};
use tests::images::BUSYBOX;
use tests::masters::Masters;
use tokio::io::{AsyncBufReadExt, BufReader};

use tests::mkctl::{Mkctl, ok};

fn deployment_yaml(replicas: u32, image: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  strategy:
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 1}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {image}
        command: [sh, -c, 'echo hello-from-web; exec sleep 3600']
"
    )
}

/// Polls `mkctl get pods -l app=web -o json` until `check` holds.
async fn wait_pods(
    m: &Mkctl,
    c: &Cluster,
    what: &str,
    check: impl Fn(&[Value]) -> bool,
) -> Result<Vec<Value>> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = m.ok(&["get", "pods", "-l", "app=web", "-o", "json"]);
        if let Ok(text) = &out {
            let list: Value = serde_json::from_str(text)?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            if check(&items) {
                return Ok(items);
            }
        }
        if Instant::now() > deadline {
            bail!("{what}: not reached (last: {out:?})\n{}", c.logs());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn running(items: &[Value], n: usize, image: &str) -> bool {
    items.len() == n
        && items.iter().all(|p| {
            p["status"]["phase"] == "Running" && p["spec"]["containers"][0]["image"] == image
        })
}

fn names(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mkctl_drives_a_real_cluster() -> Result<()> {
    let c = Cluster::start(3, 2, Timing::default()).await?;
    let m = Mkctl::new(&c)?;

    // apply -f DIR: every file, every document.
    m.file("manifests/web.yaml", &deployment_yaml(2, BUSYBOX))?;
    m.file(
        "manifests/more/solo.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: solo}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: c, image: {BUSYBOX}, command: [sleep, '3600']}}\n---\n"
        ),
    )?;
    let dir = m.dir.join("manifests").display().to_string();
    let out = m.ok(&["apply", "-f", &dir, "-R"])?;
    assert!(out.contains("pod/solo created"), "{out}");
    assert!(out.contains("deployment.apps/web created"), "{out}");
    let pods = wait_pods(&m, &c, "two web pods running", |p| running(p, 2, BUSYBOX)).await?;
    let pod = names(&pods)[0].clone();

    // get in every format.
    let table = m.ok(&["get", "pods"])?;
    assert!(
        table.starts_with("NAME ") && table.lines().next().is_some_and(|h| h.ends_with("AGE")),
        "{table}"
    );
    assert!(table.contains(&pod) && table.contains("solo"), "{table}");
    let wide = m.ok(&["get", "po", "-o", "wide"])?;
    assert!(
        wide.lines().next().is_some_and(|h| h.contains("NODE")),
        "{wide}"
    );
    assert!(
        wide.contains(&c.worker_name(0)) || wide.contains(&c.worker_name(1)),
        "{wide}"
    );
    let name = m.ok(&["get", "deploy", "-o", "name"])?;
    assert_eq!(name.trim(), "deployment.apps/web");
    let json: Value = serde_json::from_str(&m.ok(&["get", "deployment/web", "-o", "json"])?)?;
    assert_eq!(json["spec"]["replicas"], 2);
    let yaml = m.ok(&["get", "deploy", "web", "-o", "yaml"])?;
    assert!(yaml.contains("kind: Deployment"), "{yaml}");
    let nodes = m.ok(&["get", "nodes"])?;
    assert_eq!(
        nodes.lines().filter(|l| l.contains(" Ready")).count(),
        2,
        "{nodes}"
    );

    // What get printed re-applies cleanly.
    let again = m.file("again.yaml", &yaml)?;
    let out = m.ok(&["apply", "-f", &again])?;
    assert!(out.contains("deployment.apps/web"), "{out}");
    let list = m.file("list.json", &m.ok(&["get", "pods", "-o", "json"])?)?;
    m.ok(&["apply", "-f", &list])?;

    // describe shows the events; logs and exec reach the container.
    let described = m.ok(&["describe", "deploy", "web"])?;
    assert!(
        described.contains("Events:") && described.contains("ScalingReplicaSet"),
        "{described}"
    );
    let described = m.ok(&["describe", "pod", &pod])?;
    assert!(described.contains("Scheduled"), "{described}");
    let logs = m.ok(&["logs", &pod])?;
    assert!(logs.contains("hello-from-web"), "{logs}");
    let said = m.ok(&["exec", &pod, "--", "echo", "hi-from-exec"])?;
    assert_eq!(said.trim(), "hi-from-exec");

    // A Service: get, its Endpoints (written by the controller; these pods
    // publish no host port, so none are endpoints), describe.
    let svc = m.file(
        "svc.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{name: http, port: 80}]\n",
    )?;
    let out = m.ok(&["apply", "-f", &svc])?;
    assert!(out.contains("service/web created"), "{out}");
    let svcs = m.ok(&["get", "svc"])?;
    assert!(
        svcs.starts_with("NAME ") && svcs.contains("http:80/TCP"),
        "{svcs}"
    );
    wait_until("the Endpoints of web", || {
        Ok(m.ok(&["get", "ep", "web", "-o", "name"])
            .is_ok_and(|o| o.trim() == "endpoints/web"))
    })
    .await?;
    let described = m.ok(&["describe", "service", "web"])?;
    for line in [
        "Selector:     app=web",
        "Port:         http  80/TCP",
        "Endpoints:    <none>",
    ] {
        assert!(described.contains(line), "{line:?} not in {described}");
    }

    // watch sees a change: a scale to 3 adds a pod it prints.
    let mut watcher = tokio::process::Command::new(tests::mkctl::bin()?)
        .args(["get", "pods", "-l", "app=web", "-w"])
        .env("MKUBECONFIG", &m.config)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(watcher.stdout.take().context("stdout")?).lines();
    // The list comes first: its header and the two pods.
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await??;
    }
    let out = m.ok(&["scale", "deploy/web", "--replicas", "3"])?;
    assert_eq!(out.trim(), "deployment.apps/web scaled");
    let known = names(&pods);
    let seen_new = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            let first = line.split_whitespace().next().unwrap_or("").to_string();
            if first.starts_with("web-") && !known.contains(&first) {
                return anyhow::Ok(first);
            }
        }
        bail!("the watch ended")
    })
    .await??;
    assert!(seen_new.starts_with("web-"));
    drop(watcher);
    wait_pods(&m, &c, "three web pods", |p| running(p, 3, BUSYBOX)).await?;

    // A new image rolls out; rollout status waits for it; undo goes back.
    let v2 = "mkube-test/busybox:rollout";
    let tagged = Command::new("docker").args(["tag", BUSYBOX, v2]).status()?;
    assert!(tagged.success());
    m.file("web-v2.yaml", &deployment_yaml(3, v2))?;
    let out = m.ok(&[
        "apply",
        "-f",
        &m.dir.join("web-v2.yaml").display().to_string(),
    ])?;
    assert_eq!(out.trim(), "deployment.apps/web configured");
    let status = m.ok(&["rollout", "status", "deploy/web", "--timeout", "90s"])?;
    assert!(status.contains("successfully rolled out"), "{status}");
    let history = m.ok(&["rollout", "history", "deploy/web"])?;
    assert!(
        history.contains(BUSYBOX) && history.contains(v2),
        "{history}"
    );
    let out = m.ok(&["rollout", "undo", "deploy/web"])?;
    assert_eq!(out.trim(), "deployment.apps/web rolled back");
    m.ok(&["rollout", "status", "deploy/web", "--timeout", "90s"])?;
    wait_pods(&m, &c, "back on the first image", |p| {
        running(p, 3, BUSYBOX)
    })
    .await?;

    // drain refuses to lose a pod no controller manages; --force evicts it
    // too, and the Deployment's pods move to the other node.
    let solo: Value = serde_json::from_str(&m.ok(&["get", "pod", "solo", "-o", "json"])?)?;
    let node = solo["spec"]["nodeName"]
        .as_str()
        .context("solo's node")?
        .to_string();
    let e = m.fails(&["drain", &node])?;
    assert!(e.contains("default/solo") && e.contains("--force"), "{e}");
    let out = m.ok(&["drain", &node, "--force"])?;
    assert!(
        out.contains(&format!("node/{node} drained")) && out.contains("default/solo"),
        "{out}"
    );
    let nodes = m.ok(&["get", "nodes"])?;
    assert!(nodes.contains("SchedulingDisabled"), "{nodes}");
    let moved = wait_pods(&m, &c, "no pod on the drained node", |p| {
        running(p, 3, BUSYBOX) && p.iter().all(|x| x["spec"]["nodeName"] != node.as_str())
    })
    .await?;
    // The drain evicted solo gracefully: gone once its container stopped.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = m.run(&["get", "pod", "solo"])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            assert!(stderr.contains("NotFound"), "{stderr}");
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "solo was still there a minute after the drain: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = m.ok(&["uncordon", &node])?;
    assert_eq!(out.trim(), format!("node/{node} uncordoned"));

    // taint: the empty node takes no new pod that does not tolerate it;
    // the taint is removed with a trailing -.
    let out = m.ok(&["taint", "nodes", &node, "dedicated=batch:NoSchedule"])?;
    assert_eq!(out.trim(), format!("node/{node} tainted"));
    let e = m.fails(&["taint", "nodes", &node, "dedicated=other:NoSchedule"])?;
    assert!(e.contains("--overwrite"), "{e}");
    let e = m.fails(&["taint", "nodes", &node, "dedicated:NoExecute"])?;
    assert!(e.contains("NoExecute"), "{e}");
    let tainted: Value = serde_json::from_str(&m.ok(&["get", "node", &node, "-o", "json"])?)?;
    assert_eq!(
        tainted["spec"]["taints"],
        serde_json::json!([{"key": "dedicated", "value": "batch", "effect": "NoSchedule"}])
    );
    m.ok(&["scale", "deploy/web", "--replicas", "5"])?;
    wait_pods(&m, &c, "five web pods, none on the tainted node", |p| {
        running(p, 5, BUSYBOX) && p.iter().all(|x| x["spec"]["nodeName"] != node.as_str())
    })
    .await?;
    m.ok(&["scale", "deploy/web", "--replicas", "3"])?;
    wait_pods(&m, &c, "three web pods again", |p| running(p, 3, BUSYBOX)).await?;
    let out = m.ok(&["taint", "nodes", &node, "dedicated:NoSchedule-"])?;
    assert_eq!(out.trim(), format!("node/{node} tainted"));
    let untainted: Value = serde_json::from_str(&m.ok(&["get", "node", &node, "-o", "json"])?)?;
    assert!(untainted["spec"].get("taints").is_none(), "{untainted}");

    // cluster status: three members, one leader, their indexes.
    let status = m.ok(&["cluster", "status"])?;
    assert_eq!(status.lines().count(), 5, "{status}");
    assert_eq!(status.matches("Leader").count(), 1, "{status}");
    assert_eq!(status.matches("voter)").count(), 3, "{status}");

    // kv: the store underneath, for debugging.
    m.ok(&["kv", "put", "/debug/note", "hello"])?;
    assert_eq!(m.ok(&["kv", "get", "/debug/note"])?.trim(), "hello");
    assert!(
        m.ok(&["kv", "get", "/registry/deployments/", "--prefix"])?
            .contains("/registry/deployments/default/web")
    );
    assert_eq!(m.ok(&["kv", "del", "/debug/note"])?.trim(), "1");
    let e = m.fails(&["kv", "get", "/debug/note"])?;
    assert!(e.contains("/debug/note"), "{e}");

    // auth can-i: the admin context may write the store, a user context
    // may not (and says why), a viewer context may list but not create.
    assert_eq!(m.ok(&["auth", "can-i", "put", "kv"])?.trim(), "yes");
    let user = Mkctl::with_role(&c, "user")?;
    let out = user.run(&["auth", "can-i", "put", "kv", "-v"])?;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
    let why = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(why.contains("a user token may not call /Kv/put"), "{why}");
    let e = user.fails(&["kv", "put", "/debug/note", "hello"])?;
    assert!(e.contains("Forbidden") && e.contains("user token"), "{e}");
    let viewer = Mkctl::with_role(&c, "viewer")?;
    assert_eq!(viewer.ok(&["auth", "can-i", "list", "pods"])?.trim(), "yes");
    assert!(viewer.ok(&["get", "pods"])?.contains("NAME"));
    let out = viewer.run(&["auth", "can-i", "create", "deployments"])?;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
    let e = viewer.fails(&["apply", "-f", &m.file("viewer.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: v}\nspec: {containers: [{name: c, image: x}]}\n")?])?;
    assert!(e.contains("Forbidden") && e.contains("viewer token"), "{e}");

    // delete by name and by file.
    let victim = moved[0]["metadata"]["name"]
        .as_str()
        .context("a pod")?
        .to_string();
    let out = m.ok(&["delete", "pod", &victim])?;
    assert_eq!(out.trim(), format!("pod \"{victim}\" deleted"));
    let out = m.ok(&[
        "delete",
        "-f",
        &m.dir.join("web-v2.yaml").display().to_string(),
    ])?;
    assert_eq!(out.trim(), "deployment.apps \"web\" deleted");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_one_clear_line_and_exit_code_1() -> Result<()> {
    let c = Cluster::start(1, 0, Timing::default()).await?;
    let m = Mkctl::new(&c)?;

    let bad = m.file("bad.yaml", "kind: Pod\nmetadata:\n  name: [oops\n")?;
    let e = m.fails(&["apply", "-f", &bad])?;
    assert!(
        e.contains("bad.yaml") && e.contains("line 3") && e.contains("column"),
        "{e}"
    );

    let typo = m.file(
        "typo.yaml",
        &deployment_yaml(1, BUSYBOX).replace("replicas: 1", "replica: 1"),
    )?;
    let e = m.fails(&["apply", "-f", &typo])?;
    assert!(e.starts_with("Error from server (BadRequest)"), "{e}");
    assert!(
        e.contains("unknown field `replica`") && e.contains("`replicas`"),
        "{e}"
    );

    let widget = m.file(
        "widget.yaml",
        "apiVersion: v1\nkind: Widget\nmetadata: {name: w}\n",
    )?;
    let e = m.fails(&["apply", "-f", &widget])?;
    assert!(e.contains("\"Widget\""), "{e}");
    let e = m.fails(&["get", "widgets"])?;
    assert!(e.starts_with("error: ") && e.contains("\"widgets\""), "{e}");

    let e = m.fails(&["get", "deploy", "nothing-here"])?;
    assert!(
        e.starts_with("Error from server (NotFound)") && e.contains("\"nothing-here\""),
        "{e}"
    );

    let e = m.fails(&["--server", "127.0.0.1:1", "get", "pods"])?;
    assert!(e.starts_with("error: ") && e.contains("127.0.0.1:1"), "{e}");

    let e = m.fails(&["--token", "wrong", "get", "pods"])?;
    assert!(e.contains("Unauthorized"), "{e}");

    // The master's certificate names 127.0.0.1 and m0, not localhost.
    let port = c.master_addrs[0].rsplit_once(':').context("port")?.1;
    let e = m.fails(&["--server", &format!("localhost:{port}"), "get", "pods"])?;
    assert!(
        e.starts_with("error: TLS verification of localhost:")
            && e.contains("not valid for name \"localhost\"")
            && e.contains("127.0.0.1"),
        "{e}"
    );
    // A CA that did not sign the server's certificate.
    let other = c.dir().join("other-ca");
    pki::Ca::generate("other")?.write(&other)?;
    let e = m.fails(&[
        "--certificate-authority",
        &other.join("ca.crt").display().to_string(),
        "get",
        "pods",
    ])?;
    assert!(e.contains("invalid peer certificate"), "{e}");
    // No CA at all (no context): refused before the token is sent anywhere.
    let out = m
        .command(&[
            "--server",
            &c.master_addrs[0],
            "--token",
            "t",
            "get",
            "pods",
        ])
        .env("MKUBECONFIG", c.dir().join("no-such-config"))
        .output()?;
    let e = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(
        e.contains("no certificate authority for the cluster"),
        "{e}"
    );
    // A CA file that is not there.
    let e = m.fails(&[
        "--certificate-authority",
        "/nonexistent/ca.crt",
        "get",
        "pods",
    ])?;
    assert!(e.contains("certificate authority"), "{e}");

    let e = m.fails(&["--context", "nope", "get", "pods"])?;
    assert!(e.contains("\"nope\""), "{e}");

    // Nothing of the refused manifests was written.
    for kind in ["deploy", "pods", "rs"] {
        let none = m.run(&["get", kind])?;
        assert!(none.status.success(), "{kind}");
        assert!(
            none.stdout.is_empty(),
            "{kind}: {}",
            String::from_utf8_lossy(&none.stdout)
        );
        assert!(
            String::from_utf8_lossy(&none.stderr).contains("No resources found"),
            "{kind}"
        );
    }

    // A value that is not an object, at a pod's key: named on stderr by a
    // list, refused by name naming the key, deleted by name.
    m.ok(&[
        "kv",
        "put",
        "/registry/pods/default/poison",
        "\"not an object\"",
    ])?;
    let listed = m.run(&["get", "pods", "-A"])?;
    assert!(listed.status.success());
    let warning = String::from_utf8_lossy(&listed.stderr).to_string();
    assert!(
        warning.contains("/registry/pods/default/poison is unreadable")
            && warning.contains("mkctl delete pods poison"),
        "{warning}"
    );
    let e = m.fails(&["get", "pod", "poison"])?;
    assert!(
        e.starts_with("Error from server (StoreReadError)")
            && e.contains("/registry/pods/default/poison"),
        "{e}"
    );
    m.ok(&["delete", "pod", "poison"])?;
    let listed = m.run(&["get", "pods", "-A"])?;
    assert!(
        !String::from_utf8_lossy(&listed.stderr).contains("unreadable"),
        "still listed as unreadable"
    );
    Ok(())
}

#[test]
fn output_to_a_closed_pipe_ends_quietly() -> Result<()> {
    // A pipe whose reader is gone before mkctl writes: `mkctl ... | head`.
    let (reader, writer) = std::io::pipe()?;
    drop(reader);
    let out = Command::new(tests::mkctl::bin()?)
        .args(["completion", "bash"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    Ok(())
}

#[test]
fn help_has_examples_and_completion_is_generated() -> Result<()> {
    let help = |args: &[&str]| -> Result<String> {
        let out = Command::new(tests::mkctl::bin()?).args(args).output()?;
        ok(&out)
    };
    for cmd in [
        "apply", "create", "get", "describe", "delete", "logs", "exec", "scale", "cordon",
        "uncordon", "drain",
    ] {
        let text = help(&[cmd, "--help"])?;
        assert!(
            text.contains("Examples:") && text.contains("mkctl "),
            "{cmd}: {text}"
        );
    }
    for sub in [
        ["rollout", "status"],
        ["rollout", "undo"],
        ["rollout", "history"],
        ["cluster", "status"],
    ] {
        let text = help(&[sub[0], sub[1], "--help"])?;
        assert!(text.contains("Examples:"), "{sub:?}: {text}");
    }
    let bash = help(&["completion", "bash"])?;
    assert!(
        bash.contains("mkctl") && bash.contains("complete"),
        "bash completion"
    );
    Ok(())
}

/// The seed experiment: 100 pods of the demo image created through mkctl
/// (one multi-document file), all Running, spread over the workers; the
/// time from the apply to all Running is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_pods_applied_through_mkctl_all_run_spread_over_the_workers() -> Result<()> {
    let c = Cluster::start(3, 2, Timing::default()).await?;
    let m = Mkctl::new(&c)?;
    let docs: Vec<String> = (0..100)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: seed-{i:03}\n  labels: {{app: seed}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: c, image: {BUSYBOX}, command: [sleep, '3600']}}\n"
            )
        })
        .collect();
    let file = m.file("seed.yaml", &docs.join("---\n"))?;
    let start = Instant::now();
    let out = m.ok(&["apply", "-f", &file])?;
    assert_eq!(
        out.lines().filter(|l| l.ends_with(" created")).count(),
        100,
        "{out}"
    );
    let deadline = start + Duration::from_secs(180);
    let spread = loop {
        let list: Value =
            serde_json::from_str(&m.ok(&["get", "pods", "-l", "app=seed", "-o", "json"])?)?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let running: Vec<&Value> = items
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .collect();
        if running.len() == 100 {
            let mut spread = std::collections::BTreeMap::new();
            for p in running {
                *spread
                    .entry(p["spec"]["nodeName"].as_str().unwrap_or("").to_string())
                    .or_insert(0) += 1;
            }
            break spread;
        }
        if Instant::now() > deadline {
            bail!(
                "{} of 100 pods Running after 180 s\n{}",
                running.len(),
                c.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let took = start.elapsed();
    eprintln!("100 pods applied through mkctl: all Running in {took:?}, spread {spread:?}");
    assert_eq!(spread.len(), 2, "{spread:?}");
    assert!(
        spread.values().all(|n| *n == 50),
        "spread evenly: {spread:?}"
    );
    let out = m.ok(&["delete", "-f", &file])?;
    assert_eq!(out.lines().count(), 100);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_user_token_keeps_mkctl_working_across_the_overlap() -> Result<()> {
    let c = Cluster::start(1, 0, Timing::default()).await?;
    let m = Mkctl::new(&c)?;
    let old = c.pki().token("user")?;
    let pki_tool = |args: &[&str]| -> Result<String> {
        let out = Command::new(bin_dir()?.join("mkube-pki"))
            .args(args)
            .output()?;
        ok(&out)
    };
    let dir = c.pki().dir().display().to_string();
    let works = |token: &str| -> Result<bool> {
        let out = m.run(&["--token", token, "get", "pods"])?;
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        if !out.status.success() && !stderr.contains("Unauthorized") {
            bail!("mkctl failed for another reason: {stderr}");
        }
        Ok(out.status.success())
    };
    assert!(works(&old)?, "the original token works");

    // Step 1: a new token joins; both are accepted from the next reload.
    let new = pki_tool(&["token", "add", &dir, "user"])?
        .trim()
        .to_string();
    assert_ne!(new, old);
    wait_until("the new token accepted", || works(&new)).await?;
    assert!(works(&old)?, "the old token still works during the overlap");
    m.ok(&[
        "config",
        "set-context",
        "e2e",
        "--servers",
        &c.master_addrs[0],
        "--token-file",
        &m.file("new-token", &new)?,
        "--certificate-authority",
        &c.pki().ca_file().display().to_string(),
    ])?;
    m.ok(&["get", "pods"])?;

    // Step 2: the old token retires and is refused; the context's new one works.
    pki_tool(&["token", "retire", &dir, "user"])?;
    wait_until("the old token refused", || Ok(!works(&old)?)).await?;
    let e = m.fails(&["--token", &old, "get", "pods"])?;
    assert!(e.contains("Unauthorized"), "{e}");
    m.ok(&["get", "pods"])?;
    Ok(())
}

/// Polls `check` every 100 ms until it holds or 10 s pass.
async fn wait_until(what: &str, check: impl Fn() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check()? {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Issue 24, must-show 1: scaling a Deployment with a host port down and
/// up again on one node. The old pod is `Terminating` (busybox httpd ignores
/// SIGTERM, so it holds port 8080 for its whole grace); the new one waits
/// `Pending` for the port instead of failing with `CreateContainerError`,
/// then runs. `--force` removes a pod at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminating_pod_holds_its_host_port_until_its_containers_stop() -> Result<()> {
    let c = Cluster::start(1, 1, Timing::default()).await?;
    let m = Mkctl::new(&c)?;
    let manifest = m.file(
        "held.yaml",
        &format!(
            "apiVersion: apps/v1
kind: Deployment
metadata: {{name: held}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: held}}}}
  template:
    metadata: {{labels: {{app: held}}}}
    spec:
      terminationGracePeriodSeconds: 8
      containers:
      - name: httpd
        image: {BUSYBOX}
        command: [httpd, -f, -p, '8080', -h, /www]
        ports:
        - {{containerPort: 8080, hostPort: 8080}}
"
        ),
    )?;
    m.ok(&["apply", "-f", &manifest])?;
    let pods = |m: &Mkctl| -> Result<Vec<Value>> {
        let text = m.ok(&["get", "pods", "-l", "app=held", "-o", "json"])?;
        let list: Value = serde_json::from_str(&text)?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let old = loop {
        let items = pods(&m)?;
        if let [p] = items.as_slice()
            && p["status"]["phase"] == "Running"
        {
            break p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
        }
        if Instant::now() > deadline {
            bail!("the first pod never ran: {items:?}\n{}", c.logs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    m.ok(&["scale", "deploy/held", "--replicas", "0"])?;
    let table = m.ok(&["get", "pods", "-l", "app=held"])?;
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&old) && l.contains("Terminating")),
        "mkctl get pods shows the deleted pod Terminating:\n{table}"
    );
    m.ok(&["scale", "deploy/held", "--replicas", "1"])?;

    // Until the old pod's container stops (8 s), the new pod waits for the
    // port; no pod ever fails to bind it.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut waited_for_the_port = false;
    loop {
        let items = pods(&m)?;
        let text = serde_json::to_string(&items)?;
        assert!(
            !text.contains("CreateContainerError"),
            "a pod failed to bind the held port: {text}"
        );
        let old_there = items.iter().any(|p| p["metadata"]["name"] == old.as_str());
        let new: Vec<&Value> = items
            .iter()
            .filter(|p| p["metadata"]["name"] != old.as_str())
            .collect();
        if old_there
            && new.iter().any(|p| {
                p["status"]["phase"] == "Pending"
                    && p["status"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("free ports"))
            })
        {
            waited_for_the_port = true;
        }
        if !old_there && new.len() == 1 && new[0]["status"]["phase"] == "Running" {
            break;
        }
        if Instant::now() > deadline {
            bail!("the new pod never ran: {text}\n{}", c.logs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        waited_for_the_port,
        "the new pod waited Pending for the port while the old one terminated"
    );

    // --grace-period 0 needs --force; --force removes at once.
    let e = m.fails(&["delete", "deploy", "held", "--grace-period", "0"])?;
    assert!(e.contains("--force"), "{e}");
    let victim = pods(&m)?
        .first()
        .and_then(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .context("the running pod")?;
    let out = m.run(&["delete", "pod", &victim, "--force"])?;
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Immediate deletion does not wait"),
        "kubectl's warning"
    );
    let e = m.fails(&["get", "pod", &victim])?;
    assert!(e.contains("NotFound") || e.contains("not found"), "{e}");
    Ok(())
}

/// `drain` of a node holding two of a Deployment's three pods, under a
/// PodDisruptionBudget of `minAvailable: 2`: one pod is evicted, the drain
/// says which budget it waits for until the replacement elsewhere is
/// ready, then evicts the other; at no time are fewer than two pods ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_evicts_one_pod_at_a_time_within_a_disruption_budget() -> Result<()> {
    let c = Cluster::start(1, 2, Timing::default()).await?;
    let m = Mkctl::new(&c)?;
    let manifest = m.file(
        "guarded.yaml",
        &format!(
            "apiVersion: apps/v1
kind: Deployment
metadata: {{name: guarded}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: guarded}}}}
  template:
    metadata: {{labels: {{app: guarded}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {BUSYBOX}
        command: [sleep, '3600']
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: guarded}}
spec:
  minAvailable: 2
  selector: {{matchLabels: {{app: guarded}}}}
"
        ),
    )?;
    m.ok(&["apply", "-f", &manifest])?;
    let client = c.any_client().await?;
    // (ready pods, nodes of the active pods)
    let census = || async {
        let list = client
            .list(&api::master::ListRequest {
                kind: "pods".into(),
                label_selector: Some("app=guarded".into()),
                ..Default::default()
            })
            .await?;
        let pods: Vec<api::Pod> = list
            .items
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect();
        let active: Vec<&api::Pod> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let ready = active
            .iter()
            .filter(|p| {
                p.status.as_ref().is_some_and(|s| {
                    s.phase == api::PodPhase::Running
                        && s.container_statuses.iter().all(|c| c.ready)
                })
            })
            .count();
        let nodes: Vec<String> = active
            .iter()
            .filter_map(|p| p.spec.node_name.clone())
            .collect();
        anyhow::Ok((ready, nodes))
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let nodes = loop {
        let (ready, nodes) = census().await?;
        let pdb = m.ok(&["get", "pdb", "guarded"])?;
        if ready == 3
            && pdb
                .lines()
                .nth(1)
                .is_some_and(|l| l.split_whitespace().nth(3) == Some("1"))
        {
            break nodes;
        }
        if Instant::now() > deadline {
            bail!("three ready pods and a budget allowing one: {ready} ready\n{pdb}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The node holding two of the three (spread puts two on one of two nodes).
    let busy = nodes
        .iter()
        .find(|n| nodes.iter().filter(|m| m == n).count() == 2)
        .cloned()
        .context("a node with two of the pods")?;

    let mut drain = m
        .command(&["drain", &busy, "--timeout", "120"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut fewest = 3;
    let deadline = Instant::now() + Duration::from_secs(150);
    let status = loop {
        if let Some(status) = drain.try_wait()? {
            break status;
        }
        fewest = fewest.min(census().await?.0);
        if Instant::now() > deadline {
            let _ = drain.kill();
            bail!("the drain did not end");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = drain.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.success(),
        "drain failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        fewest >= 2,
        "only {fewest} pods were ready during the drain:\n{stdout}"
    );
    let evictions = stdout
        .lines()
        .filter(|l| l.starts_with("evicting pod default/guarded-"))
        .count();
    assert_eq!(evictions, 2, "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("waiting: ")
            && l.contains("would violate PodDisruptionBudget default/guarded")),
        "the drain says what it waits for:\n{stdout}"
    );
    // Evictions one at a time: the first, a wait, then the second.
    let first_evict = stdout.find("\nevicting pod").unwrap_or(usize::MAX);
    let wait = stdout.find("\nwaiting: ").unwrap_or(usize::MAX);
    let second_evict = stdout.rfind("\nevicting pod").unwrap_or(0);
    assert!(first_evict < wait && wait < second_evict, "{stdout}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ready, nodes) = census().await?;
        if ready == 3 && nodes.iter().all(|n| n != &busy) {
            break;
        }
        if Instant::now() > deadline {
            bail!("three pods ready off the drained node: {ready} ready on {nodes:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
