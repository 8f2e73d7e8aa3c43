//! A whole-fleet recovery trusts only exports the masters signed: a forged
//! export (the state changed, its MAC left as it was) and a corrupted one
//! (a byte flipped), both newer than the last real export, are refused
//! naming them, and the cluster re-forms from the newest valid export.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use kvs::api::{GetRequest, PutRequest};
use kvs::snapshot_store::ExportMeta;
use tests::cluster::{Cluster, Timing};
use tests::masters::{Masters, kv_client_at};

/// The value the forgery swaps in: the same length, so nothing else moves.
const REAL: &str = "real-value-0123";
const FAKE: &str = "fake-value-0123";

/// An export file's header and body.
fn read_export(path: &std::path::Path) -> Result<(ExportMeta, Vec<u8>)> {
    let bytes = std::fs::read(path)?;
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .context("no header line")?;
    Ok((
        serde_json::from_slice(&bytes[..newline])?,
        bytes[newline + 1..].to_vec(),
    ))
}

/// Writes an export file as `FileSnapshotStore` names and frames it.
fn write_export(dir: &std::path::Path, meta: &ExportMeta, body: &[u8]) -> Result<String> {
    let name = format!(
        "{:020}-{:020}-{:020}.snap",
        meta.epoch.number, meta.epoch.founder, meta.index
    );
    let mut bytes = serde_json::to_vec(meta)?;
    bytes.push(b'\n');
    bytes.extend_from_slice(body);
    std::fs::write(dir.join(&name), bytes)?;
    Ok(name)
}

fn replace(haystack: &[u8], from: &str, to: &str) -> Option<Vec<u8>> {
    let at = haystack
        .windows(from.len())
        .position(|w| w == from.as_bytes())?;
    let mut out = haystack.to_vec();
    out[at..at + to.len()].copy_from_slice(to.as_bytes());
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_and_a_corrupted_export_are_refused_and_the_newest_valid_one_is_used() -> Result<()>
{
    let mut c = Cluster::start(3, 0, Timing::default()).await?;
    let admin = c.admin_credentials()?;
    let leader = c.leader().await.context("a leader")?;
    let kv = kv_client_at(&c.master_addr(leader), &admin, Duration::from_secs(10))?;
    kv.put(&PutRequest {
        key: "/proof".into(),
        value: REAL.into(),
        request_id: None,
    })
    .await?;
    let written = c.kv_status(leader).await?.applied_index;
    c.wait_for_export(written, Duration::from_secs(30)).await?;
    for i in 0..3 {
        c.kill_master(i);
    }

    // Newer than every real export: one forged, one corrupted.
    let dir = c.dir().join("exports");
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "snap"))
        .collect();
    files.sort();
    let newest = files.last().context("no export was written")?;
    let (meta, body) = read_export(newest)?;
    let Some(forged_body) = replace(&body, REAL, FAKE) else {
        bail!("the newest export does not hold {REAL}");
    };
    let forged = write_export(
        &dir,
        &ExportMeta {
            index: meta.index + 1000,
            ..meta
        },
        &forged_body,
    )?;
    let mut corrupt_body = body.clone();
    let middle = corrupt_body.len() / 2;
    corrupt_body[middle] ^= 0x20;
    let corrupted = write_export(
        &dir,
        &ExportMeta {
            index: meta.index + 500,
            ..meta
        },
        &corrupt_body,
    )?;

    for i in 0..3 {
        c.start_master(i)?;
    }
    c.wait_for(
        Duration::from_secs(60),
        "a leader of a new epoch",
        |c| async move { Ok(c.leader().await.map(|_| ())) },
    )
    .await?;
    let leader = c.leader().await.context("a leader")?;
    let kv = kv_client_at(&c.master_addr(leader), &admin, Duration::from_secs(10))?;
    let got = kv
        .get(&GetRequest {
            key: "/proof".into(),
        })
        .await?
        .kv
        .context("/proof is gone")?;
    ensure!(
        got.value == REAL,
        "the cluster re-formed with {:?}",
        got.value
    );
    let logs = c.logs();
    for (what, index) in [
        ("the forged export", meta.index + 1000),
        ("the corrupted export", meta.index + 500),
    ] {
        ensure!(
            logs.contains(&format!("index {index} is damaged: its MAC does not match")),
            "{what} ({forged}, {corrupted}) was not refused by name:\n{logs}"
        );
    }
    Ok(())
}
