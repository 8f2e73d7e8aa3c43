//! Metrics end to end, on a running cluster of real processes: a real
//! Prometheus (Debian's `prometheus`) scrapes the masters and a worker; the
//! Grafana dashboard names only metrics that the leader's collector really
//! writes, as the masters' JSON datasource API serves them.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use api::master::{ListRequest, WriteRequest};
use serde_json::{Value, json};
use tests::cluster::{Cluster, Timing};
use tests::clusters::free_port;
use tests::images::BUSYBOX;
use tests::masters::Masters;
use tests::testpki::TestPki;

fn dashboard() -> Result<Value> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/dashboards/mkube.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// Every metric the dashboard's panels and annotations query.
fn dashboard_targets(d: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for panel in d["panels"].as_array().into_iter().flatten() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            if let Some(target) = t["target"].as_str() {
                out.insert(target.to_owned());
            }
        }
    }
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(target) = a["target"]["target"].as_str() {
            out.insert(target.to_owned());
        }
    }
    out
}

#[test]
fn the_dashboard_validates_and_queries_only_catalogue_metrics() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("check-jsonschema")
        .arg("--schemafile")
        .arg(root.join("schemas/dashboard.relaxed-variable-query.jsonschema.json"))
        .arg(root.join("../deploy/grafana/dashboards/mkube.json"))
        .output()
        .context("running check-jsonschema (PyPI; scripts/test installs it)")?;
    assert!(
        out.status.success(),
        "the dashboard does not validate:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let targets = dashboard_targets(&dashboard()?);
    assert!(targets.len() >= 10, "{targets:?}");
    for t in &targets {
        assert!(
            t == "annotations" || api::metrics::info(t).is_some(),
            "the dashboard queries {t}, which is not in api::metrics::CATALOGUE"
        );
    }
    Ok(())
}

/// Kills the Prometheus server when the test ends.
struct Prometheus(Child, String);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Prometheus {
    /// Scrapes over TLS, trusting the cluster CA: the masters with the
    /// viewer token (read from its file), the workers with a viewer
    /// certificate (they take no token).
    fn start(
        dir: &std::path::Path,
        pki: &TestPki,
        masters: &[String],
        workers: &[String],
    ) -> Result<Prometheus> {
        let ca = pki.ca_file().display().to_string();
        let viewer = pki::token_path(pki.dir(), "viewer")?.display().to_string();
        pki.issue_into(dir, "prometheus", pki::VIEWERS, &["prometheus"])?;
        let crt = dir.join("prometheus.crt").display().to_string();
        let key = dir.join("prometheus.key").display().to_string();
        let list = |a: &[String]| {
            a.iter()
                .map(|s| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: mkube-masters
    scheme: https
    tls_config: {{ca_file: '{ca}'}}
    authorization: {{credentials_file: '{viewer}'}}
    static_configs: [{{targets: [{}]}}]
  - job_name: mkube-workers
    scheme: https
    tls_config: {{ca_file: '{ca}', cert_file: '{crt}', key_file: '{key}'}}
    static_configs: [{{targets: [{}]}}]
",
            list(masters),
            list(workers)
        );
        let path = dir.join("prometheus.yml");
        std::fs::write(&path, config)?;
        let address = format!("127.0.0.1:{}", free_port()?);
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus-data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting prometheus (Debian's `prometheus` package)")?;
        Ok(Prometheus(child, address))
    }

    /// The result vector of an instant query.
    fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let mut response = ureq::get(&format!("http://{}/api/v1/query", self.1))
            .query("query", expr)
            .call()?;
        let body: Value = serde_json::from_str(&response.body_mut().read_to_string()?)?;
        if body["status"] != "success" {
            bail!("prometheus answered {body}");
        }
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }
}

fn value(series: &Value) -> f64 {
    series["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// A client of the datasource API as Grafana is provisioned: trusting the
/// cluster CA only, sending the viewer token.
struct Datasource {
    http: reqwest::Client,
    address: String,
    token: String,
}

impl Datasource {
    fn new(pki: &TestPki, address: &str) -> Result<Datasource> {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.ca_file())?)?;
        Ok(Datasource {
            http: reqwest::Client::builder().tls_certs_only([ca]).build()?,
            address: address.to_owned(),
            token: pki.token("viewer")?,
        })
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let response = self
            .http
            .post(format!("https://{}{path}", self.address))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await?
            .error_for_status()?;
        Ok(response.json().await?)
    }

    /// The status of a request with `token` (or none).
    async fn status_with(&self, token: Option<&str>) -> Result<u16> {
        let mut request = self.http.post(format!("https://{}/metrics", self.address));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        Ok(request.json(&json!({})).send().await?.status().as_u16())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_masters_and_a_worker_and_the_dashboard_matches_what_is_collected()
-> Result<()> {
    let c = Cluster::start(3, 1, Timing::default()).await?;
    let client = c.any_client().await?;
    // One pod, so that the scheduler has a latency to report.
    client
        .apply(&WriteRequest {
            object: json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "metered"},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"]}]
                }
            }),
        })
        .await?;
    let nodes = client
        .list(&ListRequest {
            kind: "nodes".into(),
            namespace: None,
            label_selector: None,
            node_name: None,
        })
        .await?;
    let worker = nodes.items[0]["status"]["address"]
        .as_str()
        .ok_or_else(|| anyhow!("the node has no address: {}", nodes.items[0]))?
        .to_owned();
    let worker_name = nodes.items[0]["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let prometheus = Prometheus::start(
        c.dir(),
        c.pki(),
        &c.master_addrs,
        std::slice::from_ref(&worker),
    )?;
    let leader_of = |series: &[Value]| -> Vec<String> {
        series
            .iter()
            .filter(|s| value(s) == 1.0)
            .filter_map(|s| s["metric"]["master"].as_str().map(str::to_owned))
            .collect()
    };
    c.wait_for(
        Duration::from_secs(60),
        "Prometheus holding every master's and the worker's series",
        |_| {
            let prometheus = &prometheus;
            let worker_name = worker_name.clone();
            async move {
                let up = prometheus.query("up == 1")?;
                if up.len() != 4 {
                    return Ok(None);
                }
                let terms = prometheus.query("mkube_raft_term")?;
                let masters: BTreeSet<&str> = terms
                    .iter()
                    .filter_map(|s| s["metric"]["master"].as_str())
                    .collect();
                let leaders = leader_of(&prometheus.query("mkube_raft_is_leader")?);
                let runtime = prometheus.query(&format!(
                    "mkube_worker_runtime_up{{node=\"{worker_name}\"}}"
                ))?;
                let running = prometheus.query("mkube_pods{phase=\"Running\"} == 1")?;
                Ok((masters.len() == 3
                    && leaders.len() == 1
                    && runtime.first().map(value) == Some(1.0)
                    && running.len() == 1)
                    .then_some(()))
            }
        },
    )
    .await?;
    let terms = prometheus.query("mkube_raft_term")?;
    let values: BTreeSet<u64> = terms.iter().map(|s| value(s) as u64).collect();
    assert_eq!(
        values.len(),
        1,
        "every master reports the same term: {terms:?}"
    );
    let cpu = prometheus.query(&format!(
        "mkube_worker_pods{{node=\"{worker_name}\",phase=\"Running\"}}"
    ))?;
    assert_eq!(
        cpu.first().map(value),
        Some(1.0),
        "the worker reports its running pod: {cpu:?}"
    );

    // Every metric the dashboard queries is in the masters' store, served by
    // the datasource API of a master that is not necessarily the leader.
    let wanted = dashboard_targets(&dashboard()?);
    let grafana = std::sync::Arc::new(Datasource::new(c.pki(), &c.grafana_addrs[0])?);
    // The datasource speaks TLS and wants a reading token, like the API;
    // a member token only with a masters' certificate.
    assert_eq!(grafana.status_with(None).await?, 401, "no token");
    assert_eq!(
        grafana.status_with(Some("wrong")).await?,
        401,
        "a wrong token"
    );
    assert_eq!(
        grafana.status_with(Some(&c.pki().token("join")?)).await?,
        403,
        "a worker's join token may not read metrics"
    );
    assert_eq!(
        grafana.status_with(Some(&c.pki().token("member")?)).await?,
        403,
        "a member token without a masters' certificate"
    );
    assert!(
        ureq::post(&format!("http://{}/metrics", c.grafana_addrs[0]))
            .send("{}")
            .is_err(),
        "no plain HTTP"
    );
    c.wait_for(
        Duration::from_secs(60),
        "every dashboard metric in m0's metrics store",
        |_| {
            let (grafana, wanted) = (std::sync::Arc::clone(&grafana), wanted.clone());
            async move {
                let listed = grafana.post("/metrics", &json!({})).await?;
                let names: BTreeSet<String> = listed
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|m| m["value"].as_str().map(str::to_owned))
                    .collect();
                let missing: Vec<&String> = wanted.difference(&names).collect();
                if !missing.is_empty() {
                    eprintln!("not yet collected: {missing:?}");
                }
                Ok(missing.is_empty().then_some(()))
            }
        },
    )
    .await?;
    let series = grafana
        .post(
            "/query",
            &json!({"targets": [{"refId": "A", "target": "mkube_raft_term"}, {"refId": "B", "target": "annotations"}]}),
        )
        .await?;
    let answers = series.as_array().cloned().unwrap_or_default();
    let terms: Vec<&Value> = answers
        .iter()
        .filter(|a| a.get("datapoints").is_some())
        .collect();
    assert_eq!(terms.len(), 3, "one term series per master: {series}");
    let table = answers
        .iter()
        .find(|a| a["type"] == "table")
        .ok_or_else(|| anyhow!("no annotations table: {series}"))?;
    assert!(
        table["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r[1] == "LeaderElected"),
        "the leader's election is an annotation: {table}"
    );
    Ok(())
}
