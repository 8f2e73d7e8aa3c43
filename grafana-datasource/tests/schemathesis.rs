//! Runs schemathesis (PyPI) with the patched JSON datasource spec against the
//! real API on loopback, over an embedded store holding a series of every
//! catalogue metric and some annotations, with every check schemathesis has
//! (see `schemathesis.toml` for the one setting).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use api::metrics::{Annotation, CATALOGUE, Point};
use grafana_datasource::{MetricsStore, SqliteStore, sqlite::DEFAULT_RETENTION};

fn spec() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/simpod-json-datasource-openapi.patched.yaml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_conforms_to_the_patched_spec_under_schemathesis() {
    let dir = std::env::temp_dir().join(format!("mkube-st-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = SqliteStore::open(&dir.join("metrics.db"), DEFAULT_RETENTION).expect("open store");
    let now = jiff::Timestamp::now().as_millisecond();
    let mut points = Vec::new();
    for (i, metric) in CATALOGUE.iter().enumerate() {
        for t in 0..120 {
            points.push(Point::new(
                metric.name,
                &[("master", "m1"), ("phase", "Running")],
                now - t * 30_000,
                (i as i64 * t) as f64,
            ));
        }
    }
    store.write(&points).await.expect("seed points");
    store
        .write_annotations(&[Annotation {
            time_ms: now - 60_000,
            title: "LeaderElected".into(),
            text: "m1 became the leader in term 3".into(),
            tags: vec!["master:m1".into()],
        }])
        .await
        .expect("seed annotations");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let store: Arc<dyn MetricsStore> = Arc::new(store);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(grafana_datasource::serve(listener, store, async {
        let _ = stopped.await;
    }));

    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml");
    let workdir = dir.clone();
    // Each run fuzzes from a new seed; a failure prints its seed, and
    // ST_SEED=<seed> replays that run.
    let seed: Vec<String> = std::env::var("ST_SEED")
        .map(|s| vec!["--seed".into(), s])
        .unwrap_or_default();
    let output = tokio::task::spawn_blocking(move || {
        // In the temporary folder: schemathesis keeps state in its cwd.
        Command::new("st")
            .current_dir(&workdir)
            .arg("--config-file")
            .arg(&config)
            .args([
                "--no-color",
                "run",
                "--checks",
                "all",
                "--generation-database",
                "none",
            ])
            .args(&seed)
            .arg("--url")
            .arg(format!("http://{addr}"))
            .arg(spec())
            .output()
    })
    .await
    .expect("join")
    .expect("running `st` (schemathesis; scripts/test installs it with pip)");
    let _ = stop.send(());
    let _ = server.await;
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("7 selected / 7 total"),
        "every operation was tested:\n{stdout}"
    );
}
