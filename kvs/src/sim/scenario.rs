//! Scenario files: hand-written Raft regressions in etcd's `testdata` style.
//!
//! A file under `kvs/testdata/` is a list of commands, each followed by
//! `----` and the output it must produce, then a blank line:
//!
//! ```text
//! # comment
//! cluster n=3
//! ----
//! ok
//!
//! campaign 1
//! ----
//! 1: PreCandidate term=0 leader=- commit=0 last=0/0
//! ```
//!
//! Commands: `cluster n=N [pre_vote=false] [check_quorum=false]
//! [max_batch=N]`, `tick ID [N]`, `campaign ID` (tick until it campaigns),
//! `stabilize` (deliver every message until quiet, printing each),
//! `deliver-round` (deliver only what is queued now), `propose ID DATA`, `read-index ID
//! CTX`, `transfer ID TO`, `partition 1 2 | 3`, `heal`, `status`, `log ID`.
//!
//! `REWRITE=1 cargo test -p kvs --lib scenario` rewrites the expected
//! outputs from what the code does now; review the diff before committing.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

use crate::raft::{Body, Config, Entry, Message, NodeId, Payload, RaftNode, Role};

#[derive(Default)]
struct Scenario {
    nodes: BTreeMap<NodeId, RaftNode>,
    queue: VecDeque<Message>,
    blocked: BTreeSet<(NodeId, NodeId)>,
}

fn fmt_entry(e: &Entry) -> String {
    match &e.payload {
        Payload::Noop => format!("{}/{} noop", e.index, e.term),
        Payload::Command(b) => format!("{}/{} {}", e.index, e.term, String::from_utf8_lossy(b)),
        Payload::Config(c) => format!(
            "{}/{} config voters={:?} learners={:?}",
            e.index,
            e.term,
            c.voters.keys().collect::<Vec<_>>(),
            c.learners.keys().collect::<Vec<_>>()
        ),
    }
}

fn fmt_message(m: &Message) -> String {
    let body = match &m.body {
        Body::PreVote {
            last_log_index,
            last_log_term,
        } => format!("PreVote last={last_log_index}/{last_log_term}"),
        Body::PreVoteResponse { granted } => format!(
            "PreVoteResponse {}",
            if *granted { "granted" } else { "rejected" }
        ),
        Body::RequestVote {
            last_log_index,
            last_log_term,
            transfer,
        } => format!(
            "RequestVote last={last_log_index}/{last_log_term}{}",
            if *transfer { " transfer" } else { "" }
        ),
        Body::RequestVoteResponse { granted } => {
            format!(
                "RequestVoteResponse {}",
                if *granted { "granted" } else { "rejected" }
            )
        }
        Body::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } => format!(
            "AppendEntries prev={prev_log_index}/{prev_log_term} entries=[{}] commit={leader_commit}",
            entries.iter().map(fmt_entry).collect::<Vec<_>>().join(", ")
        ),
        Body::AppendEntriesResponse {
            success,
            index,
            hint,
        } => match hint {
            Some(h) => format!(
                "AppendEntriesResponse reject index={index} hint={}/{:?}",
                h.conflict_index, h.conflict_term
            ),
            None => format!(
                "AppendEntriesResponse {} index={index}",
                if *success { "ok" } else { "reject" }
            ),
        },
        Body::Heartbeat { commit, read_seq } => {
            format!("Heartbeat commit={commit} read_seq={read_seq}")
        }
        Body::HeartbeatResponse { read_seq } => format!("HeartbeatResponse read_seq={read_seq}"),
        Body::ReadIndex { ctx } => format!("ReadIndex ctx={ctx}"),
        Body::ReadIndexResponse { ctx, index } => {
            format!("ReadIndexResponse ctx={ctx} index={index:?}")
        }
        Body::TimeoutNow => "TimeoutNow".into(),
        Body::InstallSnapshot {
            meta,
            offset,
            data,
            done,
        } => format!(
            "InstallSnapshot snapshot={}/{} offset={offset} bytes={}{}",
            meta.index,
            meta.term,
            data.len(),
            if *done { " done" } else { "" }
        ),
        Body::InstallSnapshotResponse {
            index,
            next_offset,
            installed,
            ..
        } => format!(
            "InstallSnapshotResponse index={index} next_offset={next_offset}{}",
            if *installed { " installed" } else { "" }
        ),
    };
    format!("{}->{} term={} {body}", m.from, m.to, m.term)
}

impl Scenario {
    fn node(&mut self, id: NodeId) -> Result<&mut RaftNode, String> {
        self.nodes
            .get_mut(&id)
            .ok_or_else(|| format!("no node {id}"))
    }

    fn status_line(node: &RaftNode) -> String {
        let log = node.log();
        format!(
            "{}: {:?} term={} leader={} commit={} last={}/{}",
            node.id(),
            node.role(),
            node.term(),
            node.leader().map_or("-".into(), |l| l.to_string()),
            log.committed,
            log.last_index(),
            log.last_term()
        )
    }

    /// Takes every node's Ready: queues messages, reports the rest.
    fn collect(&mut self, out: &mut String) {
        for (id, node) in self.nodes.iter_mut() {
            let ready = node.take_ready();
            self.queue.extend(ready.messages);
            for e in &ready.committed {
                let _ = writeln!(out, "{id} applied {}", fmt_entry(e));
            }
            for rs in &ready.read_states {
                let _ = writeln!(out, "{id} read-state ctx={} index={}", rs.ctx, rs.index);
            }
            for ctx in &ready.dropped_reads {
                let _ = writeln!(out, "{id} read-dropped ctx={ctx}");
            }
        }
    }

    /// Delivers one message unless its link is cut, printing what happened.
    fn deliver(&mut self, m: Message, out: &mut String) -> Result<(), String> {
        if self.blocked.contains(&(m.from, m.to)) {
            let _ = writeln!(out, "dropped {}", fmt_message(&m));
            return Ok(());
        }
        let _ = writeln!(out, "{}", fmt_message(&m));
        let to = m.to;
        self.node(to)?.step(m);
        Ok(())
    }

    fn run(&mut self, command: &str) -> Result<String, String> {
        let mut out = String::new();
        let words: Vec<&str> = command.split_whitespace().collect();
        let arg = |i: usize| -> Result<u64, String> {
            words
                .get(i)
                .ok_or_else(|| format!("`{command}`: missing argument {i}"))?
                .parse()
                .map_err(|_| format!("`{command}`: argument {i} is not a number"))
        };
        match words.first().copied() {
            Some("cluster") => {
                let mut n = 3;
                let (mut pre_vote, mut check_quorum, mut max_batch) = (true, true, 256);
                for w in &words[1..] {
                    match w.split_once('=') {
                        Some(("n", v)) => n = v.parse().map_err(|_| "n must be a number")?,
                        Some(("pre_vote", v)) => pre_vote = v == "true",
                        Some(("check_quorum", v)) => check_quorum = v == "true",
                        Some(("max_batch", v)) => {
                            max_batch = v.parse().map_err(|_| "max_batch must be a number")?
                        }
                        _ => return Err(format!("unknown cluster option {w}")),
                    }
                }
                *self = Scenario::default();
                let ids: Vec<NodeId> = (1..=n).collect();
                for &id in &ids {
                    let mut cfg = Config::new(id, ids.clone());
                    cfg.pre_vote = pre_vote;
                    cfg.check_quorum = check_quorum;
                    cfg.max_batch_entries = max_batch;
                    self.nodes.insert(id, RaftNode::new(cfg, id));
                }
                out.push_str("ok\n");
            }
            Some("tick") => {
                let id = arg(1)?;
                let n = if words.len() > 2 { arg(2)? } else { 1 };
                let node = self.node(id)?;
                for _ in 0..n {
                    node.tick();
                }
                out.push_str(&Self::status_line(node));
                out.push('\n');
            }
            Some("campaign") => {
                let node = self.node(arg(1)?)?;
                for _ in 0..1000 {
                    if matches!(
                        node.role(),
                        Role::PreCandidate | Role::Candidate | Role::Leader
                    ) {
                        break;
                    }
                    node.tick();
                }
                out.push_str(&Self::status_line(node));
                out.push('\n');
            }
            Some("stabilize") => {
                self.collect(&mut out);
                while let Some(m) = self.queue.pop_front() {
                    self.deliver(m, &mut out)?;
                    self.collect(&mut out);
                }
            }
            Some("deliver-round") => {
                // Only what is queued now; answers wait for the next command.
                self.collect(&mut out);
                let round: Vec<Message> = self.queue.drain(..).collect();
                for m in round {
                    self.deliver(m, &mut out)?;
                }
                self.collect(&mut out);
            }
            Some("propose") => {
                let id = arg(1)?;
                let data = words.get(2).ok_or("propose needs data")?.to_string();
                match self.node(id)?.propose(data.into_bytes().into()) {
                    Ok(index) => {
                        let _ = writeln!(out, "index {index}");
                    }
                    Err(e) => {
                        let _ = writeln!(out, "error: {e}");
                    }
                }
            }
            Some("read-index") => {
                let (id, ctx) = (arg(1)?, arg(2)?);
                match self.node(id)?.read_index(ctx) {
                    Ok(()) => out.push_str("ok\n"),
                    Err(e) => {
                        let _ = writeln!(out, "error: {e}");
                    }
                }
            }
            Some("transfer") => {
                let (id, to) = (arg(1)?, arg(2)?);
                let started = self.node(id)?.transfer_leadership(to);
                out.push_str(if started { "ok\n" } else { "refused\n" });
            }
            Some("partition") => {
                let groups: Vec<Vec<NodeId>> = command["partition".len()..]
                    .split('|')
                    .map(|g| {
                        g.split_whitespace()
                            .filter_map(|w| w.parse().ok())
                            .collect()
                    })
                    .collect();
                self.blocked.clear();
                for (i, a) in groups.iter().enumerate() {
                    for (j, b) in groups.iter().enumerate() {
                        if i != j {
                            for &x in a {
                                for &y in b {
                                    self.blocked.insert((x, y));
                                }
                            }
                        }
                    }
                }
                out.push_str("ok\n");
            }
            Some("heal") => {
                self.blocked.clear();
                out.push_str("ok\n");
            }
            Some("status") => {
                for node in self.nodes.values() {
                    out.push_str(&Self::status_line(node));
                    out.push('\n');
                }
            }
            Some("log") => {
                let node = self.node(arg(1)?)?;
                let entries: Vec<String> = node.log().entries().iter().map(fmt_entry).collect();
                let _ = writeln!(
                    out,
                    "{}",
                    if entries.is_empty() {
                        "(empty)".into()
                    } else {
                        entries.join(", ")
                    }
                );
            }
            _ => return Err(format!("unknown command `{command}`")),
        }
        Ok(out)
    }
}

/// Runs one file; returns the file as it should read (with actual outputs).
fn run_file(text: &str) -> Result<String, String> {
    let mut scenario = Scenario::default();
    let mut rewritten = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() || line.starts_with('#') {
            rewritten.push_str(line);
            rewritten.push('\n');
            continue;
        }
        if lines.next() != Some("----") {
            return Err(format!("`{line}` must be followed by a `----` line"));
        }
        while lines.peek().is_some_and(|l| !l.trim().is_empty()) {
            lines.next();
        }
        let output = scenario.run(line)?;
        let output = if output.is_empty() {
            "(no output)\n".to_string()
        } else {
            output
        };
        let _ = write!(rewritten, "{line}\n----\n{output}");
    }
    Ok(rewritten)
}

#[test]
fn scenario_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let rewrite = std::env::var_os("REWRITE").is_some();
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no scenario files in {}", dir.display());
    for path in paths {
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let actual = run_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if rewrite {
            std::fs::write(&path, &actual).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        } else if actual != text {
            let diff: Vec<String> = text
                .lines()
                .zip(actual.lines())
                .enumerate()
                .filter(|(_, (a, b))| a != b)
                .take(5)
                .map(|(i, (a, b))| {
                    format!(
                        "  line {}: expected {a:?}\n           got      {b:?}",
                        i + 1
                    )
                })
                .collect();
            panic!(
                "{} differs from what the code does now:\n{}\n(REWRITE=1 cargo test -p kvs --lib scenario rewrites it)",
                path.display(),
                diff.join("\n")
            );
        }
    }
}
