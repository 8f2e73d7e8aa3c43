//! Jobs on a cluster whose master and workers are containers on a private
//! Docker network, driven with the real `mkctl`: the first user's workload
//! (an Indexed Job of 200 test cases, 8 at a time) and a plain Job through
//! a worker cut off mid-run, and a Job whose pods fail.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use api::batch::Job;
use serde_json::Value;
use tests::cluster::Timing;
use tests::images::BUSYBOX;
use tests::masters::Masters;
use tests::netcluster::NetCluster;

use tests::mkctl::Mkctl;

fn job_yaml(name: &str, completions: u32, parallelism: u32, extra: &str, script: &str) -> String {
    format!(
        "apiVersion: batch/v1
kind: Job
metadata: {{name: {name}}}
spec:
  completions: {completions}
  parallelism: {parallelism}
{extra}  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {BUSYBOX}
        command: [sh, -c, '{script}']
"
    )
}

/// The score index `i` prints: any function of the index will do.
fn score(i: u32) -> u32 {
    i * i % 1009
}

fn job(m: &Mkctl, name: &str) -> Result<Job> {
    let text = m.ok(&["get", "job", name, "-o", "json"])?;
    serde_json::from_str(&text).with_context(|| format!("job {name}: {text}"))
}

fn pods_on(m: &Mkctl, node: &str) -> Result<usize> {
    let text = m.ok(&["get", "pods", "-o", "json"])?;
    let list: Value = serde_json::from_str(&text)?;
    Ok(list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|p| p["spec"]["nodeName"] == node && p["status"]["phase"] == "Running")
                .count()
        })
        .unwrap_or(0))
}

/// Must-show 2 and 3 of the Jobs issue, on one cluster: an Indexed Job of
/// 200 completions (parallelism 8) and a Job of 20 (parallelism 4) run
/// while a worker is cut off; both complete, every index's result is
/// printed once by one `mkctl logs job/...`, and nothing is charged to
/// `backoffLimit`. A Job whose pods exit 1 fails after its retries, saying
/// why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_complete_through_a_lost_worker_and_every_result_is_printed_once() -> Result<()> {
    let timing = Timing::default();
    let c = NetCluster::start(1, 2, timing).await?;
    let m = Mkctl::configure(
        &c.dir().join("mkctl"),
        &c.servers(),
        &c.pki().token("admin")?,
        &c.pki().ca_file(),
    )?;
    let cases = m.file(
        "cases.yaml",
        &job_yaml(
            "cases",
            200,
            8,
            "  completionMode: Indexed\n  backoffLimit: 0\n",
            "echo score $((JOB_COMPLETION_INDEX * JOB_COMPLETION_INDEX % 1009)); sleep 1",
        ),
    )?;
    let lines = m.file(
        "lines.yaml",
        &job_yaml("lines", 20, 4, "  backoffLimit: 0\n", "echo done; sleep 2"),
    )?;
    let failing = m.file(
        "failing.yaml",
        &job_yaml(
            "failing",
            3,
            1,
            "  backoffLimit: 2\n",
            "echo trying; exit 1",
        ),
    )?;
    for f in [&cases, &lines, &failing] {
        m.ok(&["apply", "-f", f])?;
    }

    // Cut worker 0 off once a fifth of the cases are done and it runs pods.
    let lost = c.worker_name(0);
    c.wait_for(
        Duration::from_secs(180),
        "40 cases done and pods running on worker 0",
        |_| {
            let (m, lost) = (&m, lost.clone());
            async move {
                let done = job(m, "cases")?.status.unwrap_or_default().succeeded;
                Ok((done >= 40 && pods_on(m, &lost)? > 0).then_some(()))
            }
        },
    )
    .await?;
    c.disconnect(&c.worker_container(0))?;

    let finished = |name: &'static str| {
        let m = &m;
        move |_: &NetCluster| async move {
            let j = job(m, name)?;
            Ok(j.status.filter(|s| s.finished()))
        }
    };
    let cases_status = c
        .wait_for(
            Duration::from_secs(300),
            "the cases Job finished",
            finished("cases"),
        )
        .await?;
    let lines_status = c
        .wait_for(
            Duration::from_secs(120),
            "the lines Job finished",
            finished("lines"),
        )
        .await?;
    let failing_status = c
        .wait_for(
            Duration::from_secs(120),
            "the failing Job finished",
            finished("failing"),
        )
        .await?;

    // Both complete with nothing charged to backoffLimit (it is 0: one
    // charge would have failed them).
    for (name, s, n) in [("cases", &cases_status, 200), ("lines", &lines_status, 20)] {
        assert!(s.condition("Complete").is_some(), "{name} completed: {s:?}");
        assert_eq!((s.succeeded, s.failed), (n, 0), "{name}: {s:?}");
    }
    assert_eq!(cases_status.completed_indexes, "0-199");

    // One command prints all 200 results, each exactly once.
    let out = m.ok(&["logs", "job/cases"])?;
    let mut results: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for line in out.lines() {
        let Some((index, rest)) = line.strip_prefix('[').and_then(|l| l.split_once("] ")) else {
            bail!("a line without its index: {line:?}");
        };
        results
            .entry(index.parse()?)
            .or_default()
            .push(rest.to_string());
    }
    assert_eq!(results.len(), 200, "every index has a result:\n{out}");
    for (i, got) in &results {
        assert_eq!(got, &[format!("score {}", score(*i))], "index {i}");
    }
    assert_eq!(
        m.ok(&["logs", "job/cases", "--index", "17"])?,
        "score 289\n"
    );
    let lines_out = m.ok(&["logs", "job/lines"])?;
    assert_eq!(
        lines_out.lines().filter(|l| l.ends_with("] done")).count(),
        20,
        "{lines_out}"
    );

    // The failing Job: three failures (backoffLimit 2), and the reason.
    assert_eq!(failing_status.failed, 3, "{failing_status:?}");
    let failed = failing_status
        .condition("Failed")
        .context("Failed condition")?;
    assert_eq!(failed.reason, "BackoffLimitExceeded");
    let table = m.ok(&["get", "jobs"])?;
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("failing ") && l.contains("Failed")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("cases ") && l.contains("Complete") && l.contains("200/200")),
        "{table}"
    );
    let described = m.ok(&["describe", "job", "failing"])?;
    assert!(described.contains("BackoffLimitExceeded"), "{described}");

    // Deleting a Job takes its pods with it.
    m.ok(&["delete", "job", "cases"])?;
    c.wait_for(Duration::from_secs(60), "the cases pods gone", |_| {
        let m = &m;
        async move {
            let text = m.ok(&["get", "pods", "-o", "json"])?;
            let list: Value = serde_json::from_str(&text)?;
            let left = list["items"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter(|p| {
                            p["metadata"]["name"]
                                .as_str()
                                .is_some_and(|n| n.starts_with("cases-"))
                        })
                        .count()
                })
                .unwrap_or(0);
            Ok((left == 0).then_some(()))
        }
    })
    .await?;
    Ok(())
}
