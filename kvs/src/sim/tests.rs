//! Seeds, replays, liveness, and proof that the checks can fail.

use super::{Report, SimConfig, run};

/// Default seeds per test; `SIM_SEEDS` overrides it for a soak.
fn seeds(default: u64) -> u64 {
    std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn run_seeds(nodes: usize, first: u64, count: u64) -> Vec<Report> {
    let mut reports = Vec::new();
    for seed in first..first + count {
        match run(&SimConfig::new(seed, nodes)) {
            Ok(r) => reports.push(r),
            Err(f) => panic!("{f}"),
        }
    }
    reports
}

#[test]
fn three_nodes_with_faults() {
    let reports = run_seeds(3, 0, seeds(4));
    assert!(reports.iter().all(|r| !r.history.is_empty()));
}

/// Replays one seed (`SIM_SEED`, `SIM_NODES`; `SIM_TRACE=1` prints every
/// event) twice and checks that both runs are identical.
#[test]
fn replay() {
    let seed = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(7);
    let nodes = std::env::var("SIM_NODES").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let cfg = SimConfig::new(seed, nodes);
    let first = run(&cfg);
    let second = run(&SimConfig { verbose: false, ..cfg.clone() });
    match (first, second) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.digest(), b.digest(), "seed {seed} did not replay identically");
            println!(
                "seed {seed}: {} events, {} operations, leaderless periods {:?} ms, recovery {} ms",
                a.events,
                a.history.len(),
                a.leaderless_ms,
                a.recovery_ms
            );
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.reason, b.reason, "seed {seed} failed differently on replay");
            panic!("{a}");
        }
        (a, b) => panic!("seed {seed} replayed differently: {a:?} vs {b:?}"),
    }
}

#[test]
fn five_nodes_with_faults() {
    let reports = run_seeds(5, 1_000_000, seeds(4));
    assert!(reports.iter().all(|r| !r.history.is_empty()));
}
