//! Seeds, replays, liveness, and proof that the checks can fail.

use super::{Report, SimConfig, run};

/// Default seeds per test; `SIM_SEEDS` overrides it for a soak.
fn seeds(default: u64) -> u64 {
    std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
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

/// Every run must have done real work: operations answered and checked,
/// and across the runs every kind of eviction and recovery must have happened.
fn assert_worked(reports: &[Report]) {
    for r in reports {
        assert!(
            r.history.iter().filter(|o| o.output.is_some()).count() >= 10,
            "a run answered almost nothing"
        );
    }
    let installed: u64 = reports.iter().map(|r| r.snapshots_installed).sum();
    let runs = reports.iter().filter(|r| r.snapshots_installed > 0).count();
    let sum = |f: fn(&Report) -> u64| reports.iter().map(f).sum::<u64>();
    let (minority, majority, all, churn) = (
        sum(|r| r.evictions.minority),
        sum(|r| r.evictions.majority),
        sum(|r| r.evictions.all),
        sum(|r| r.evictions.churn),
    );
    let reformed = sum(|r| r.epochs.saturating_sub(1));
    let from_export = sum(|r| r.epochs_from_export);
    let promotions = sum(|r| r.promotions);
    let lost = sum(|r| r.lost_acknowledged);
    let acknowledged = reports
        .iter()
        .flat_map(|r| &r.history)
        .filter(|o| o.output.is_some() && o.input.is_write())
        .count();
    println!(
        "{} runs: {installed} snapshots installed (in {runs} runs); evictions: {minority} minority, \
         {majority} majority, {all} whole fleet, {churn} churn; {reformed} re-formed epochs \
         ({from_export} from an export); {promotions} restarted incarnations promoted; \
         {lost} of {acknowledged} acknowledged writes lost to re-formation (all after the newest export)",
        reports.len()
    );
    assert!(
        runs * 4 >= reports.len(),
        "snapshots were installed in only {runs} of {} runs",
        reports.len()
    );
    if reports.len() >= 100 {
        assert!(
            minority > 0 && majority > 0 && all > 0 && churn > 0,
            "an eviction kind never happened"
        );
        assert!(
            from_export > 0 && promotions > 0,
            "no recovery from an export, or no promotion"
        );
    }
}

// 500 seeds by default (4 × 125, so the 2 cores share them), with faults.
#[test]
fn three_nodes_with_faults_a() {
    assert_worked(&run_seeds(3, 0, seeds(125)));
}

#[test]
fn three_nodes_with_faults_b() {
    assert_worked(&run_seeds(3, 500_000, seeds(125)));
}

#[test]
fn five_nodes_with_faults_a() {
    assert_worked(&run_seeds(5, 1_000_000, seeds(125)));
}

#[test]
fn five_nodes_with_faults_b() {
    assert_worked(&run_seeds(5, 1_500_000, seeds(125)));
}

/// Liveness: after healing, a leader comes and every client is answered
/// (each run enforces its bound); prints how long the cluster was without a
/// usable leader, in virtual ms.
#[test]
fn election_durations() {
    let mut leaderless: Vec<u64> = Vec::new();
    let mut recovery: Vec<u64> = Vec::new();
    for (nodes, first) in [(3, 2_000_000), (5, 3_000_000)] {
        for r in run_seeds(nodes, first, seeds(50)) {
            leaderless.extend(&r.leaderless_ms);
            recovery.push(r.recovery_ms);
        }
    }
    let pct = |v: &mut Vec<u64>, p: f64| {
        v.sort_unstable();
        v[((v.len() - 1) as f64 * p) as usize]
    };
    println!(
        "leaderless periods (virtual ms, {} periods): p50={} p90={} p99={} max={}",
        leaderless.len(),
        pct(&mut leaderless, 0.5),
        pct(&mut leaderless, 0.9),
        pct(&mut leaderless, 0.99),
        pct(&mut leaderless, 1.0)
    );
    println!(
        "recovery after healing (virtual ms, {} runs): p50={} p90={} p99={} max={}",
        recovery.len(),
        pct(&mut recovery, 0.5),
        pct(&mut recovery, 0.9),
        pct(&mut recovery, 0.99),
        pct(&mut recovery, 1.0)
    );
    assert!(pct(&mut recovery, 1.0) <= SimConfig::new(0, 3).liveness_ms);
}

/// Replays one seed (`SIM_SEED`, `SIM_NODES`; `SIM_TRACE=1` prints every
/// event) twice and checks that both runs are identical.
#[test]
fn replay() {
    let seed = std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let nodes = std::env::var("SIM_NODES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let cfg = SimConfig::new(seed, nodes);
    let first = run(&cfg);
    let second = run(&SimConfig {
        verbose: false,
        ..cfg.clone()
    });
    match (first, second) {
        (Ok(a), Ok(b)) => {
            assert_eq!(
                a.digest(),
                b.digest(),
                "seed {seed} did not replay identically"
            );
            println!(
                "seed {seed}: {} events, {} operations, leaderless periods {:?} ms, recovery {} ms",
                a.events,
                a.history.len(),
                a.leaderless_ms,
                a.recovery_ms
            );
        }
        (Err(a), Err(b)) => {
            assert_eq!(
                a.reason, b.reason,
                "seed {seed} failed differently on replay"
            );
            panic!("{a}");
        }
        (a, b) => panic!("seed {seed} replayed differently: {a:?} vs {b:?}"),
    }
}

/// A saved history holds each operation's epoch and each epoch's start, so
/// it is judged on its own after a JSON round trip, across a whole-fleet
/// re-formation from an export (which may lose the writes after it).
#[test]
fn a_saved_history_is_judged_on_its_own_across_epochs() {
    let report = (0..200)
        .filter_map(|seed| run(&SimConfig::new(seed, 3)).ok())
        .find(|r| {
            r.epochs_from_export > 0
                && r.epoch_history
                    .epochs
                    .iter()
                    .any(|(_, seed)| seed.revision() > 0)
        })
        .expect("a run re-formed from a non-empty export within 200 seeds");
    let saved = serde_json::to_string(&report.epoch_history).expect("encodes");
    let read: crate::linearizability::EpochHistory = serde_json::from_str(&saved).expect("decodes");
    assert_eq!(read, report.epoch_history);
    assert!(read.epochs.len() >= 2, "{} epochs", read.epochs.len());
    read.check(SimConfig::new(0, 3).checker_steps)
        .expect("each epoch's operations are linearizable from its start");
}

/// Found by a soak: a duplicated InstallSnapshotResponse made the leader
/// send the chunk again, each copy's answer another copy, until the run
/// drowned in snapshot chunks (the event budget ran out).
#[test]
fn duplicated_snapshot_answers_do_not_multiply_chunks() {
    if let Err(f) = run(&SimConfig::new(1_500_525, 5)) {
        panic!("{f}");
    }
}

/// Seed 1,000,320: two learners compacted entries they had committed, and
/// the leader (their acknowledgements lost) probed them below that; each
/// rejected a `prev` it no longer held, and the leader probed the same
/// index again for good. A probe below the commit index is now answered
/// with the commit index, as etcd's raft does.
#[test]
fn a_probe_below_the_commit_index_is_answered_not_rejected() {
    if let Err(f) = run(&SimConfig::new(1_000_320, 5)) {
        panic!("{f}");
    }
}

/// Runs seeds with a bug planted by `plant` until the simulator fails
/// one; returns how many it took, and why it failed.
fn seeds_to_catch(plant: impl Fn(&mut SimConfig), budget: u64) -> Option<(u64, String)> {
    let first: u64 = std::env::var("SIM_FIRST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    for i in first..first + budget {
        let nodes = if i % 2 == 0 { 3 } else { 5 };
        let mut cfg = SimConfig::new(i, nodes);
        plant(&mut cfg);
        if let Err(f) = run(&cfg) {
            return Some((i - first + 1, f.reason));
        }
    }
    None
}

/// A test that plants a bug (`$target.$field`: the Raft core's `bugs` or
/// the member's `member_bugs`) and expects the default seed budget to catch it.
macro_rules! caught {
    ($name:ident, $target:ident . $field:ident) => {
        #[test]
        fn $name() {
            let plant = |cfg: &mut SimConfig| {
                cfg.$target.$field = true;
                cfg.label = stringify!($field);
            };
            match seeds_to_catch(plant, 500) {
                Some((n, reason)) => {
                    println!("{} caught after {n} seeds: {reason}", stringify!($field))
                }
                None => panic!("{} was not caught within 500 seeds", stringify!($field)),
            }
        }
    };
}

caught!(
    catches_commit_of_old_term_by_counting,
    bugs.commit_old_term_by_counting
);
caught!(catches_vote_without_log_check, bugs.vote_without_log_check);
caught!(
    catches_follower_read_without_read_index,
    bugs.follower_read_without_read_index
);
caught!(catches_apply_before_commit, bugs.apply_before_commit);
caught!(
    catches_answering_a_write_before_it_applies,
    member_bugs.answer_before_apply
);
caught!(
    catches_forgetting_the_answer_table_on_restore,
    member_bugs.forget_answers_on_restore
);
caught!(
    catches_serving_a_read_before_its_index_applies,
    member_bugs.read_before_applied
);
