//! Outgoing Raft and lifecycle messages: two queues and two sender tasks
//! per peer name (an address; the incarnation behind it changes over time),
//! one lane for entries and one for everything else.
//!
//! ```text
//!            ┌─ AppendEntries, InstallSnapshot ─▶ [bulk queue] ──▶ sender task ─┐  one RaftPeer.deliver
//! raft loop ─┤                                                                  ├─ call per lane at a
//!  try_send  └─ heartbeats, votes, answers,    ─▶ [control queue] ─▶ sender task ┘  time: take everything
//!               lifecycle messages                                                 queued, send, repeat
//! ```
//!
//! Why two lanes: megabytes of entries to a follower that fell behind take
//! a while to send, and a heartbeat queued behind them would arrive late
//! enough for the follower to call an election and for the leader to lose
//! its lease (etcd's rafthttp splits its streams for the same reason). Raft
//! tolerates the reordering between lanes like any network's: a heartbeat
//! carries a commit index no higher than what the follower acknowledged,
//! and the messages that depend on each other's order (appends and
//! snapshot chunks to one follower; each member's answers) share a lane.
//!
//! Invariants: the raft loop never waits on a peer (a full queue drops the
//! message, which Raft tolerates like any loss); each lane has at most one
//! call in flight, so messages queue up while it runs and leave as one
//! batch; a dead or slow peer only ever delays its own queues, and a slow
//! bulk transfer never delays the control lane.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::api::{MessageBatch, RaftPeerClient};
use crate::member::Outgoing;

/// Messages waiting for one peer.
const QUEUE_LEN: usize = 4096;
/// Most messages in one call.
const MAX_BATCH: usize = 1024;
/// The most payload bytes in one call (a single larger message goes
/// alone): with commands in base64 (4/3) and AppendEntries bounded by the
/// core's `max_batch_bytes`, a call stays far below the peers' body limit.
const MAX_BATCH_BYTES: usize = 512 * 1024;

/// The payload bytes a message carries (entries and snapshot chunks).
fn payload_bytes(m: &Outgoing) -> usize {
    use crate::raft::{Body, Payload};
    match m {
        Outgoing::Raft(m) => match &m.body {
            Body::AppendEntries { entries, .. } => entries
                .iter()
                .map(|e| match &e.payload {
                    Payload::Command(b) => b.len() + 32,
                    _ => 64,
                })
                .sum(),
            Body::InstallSnapshot { data, .. } => data.len(),
            _ => 0,
        },
        Outgoing::Lifecycle(_) => 256,
    }
}

/// Whether `m` travels in the bulk lane (see the module doc).
fn is_bulk(m: &Outgoing) -> bool {
    use crate::raft::Body;
    matches!(
        m,
        Outgoing::Raft(crate::raft::Message {
            body: Body::AppendEntries { .. } | Body::InstallSnapshot { .. },
            ..
        })
    )
}

/// The sending side of one peer's lanes.
pub(crate) struct PeerSender {
    control: mpsc::Sender<Outgoing>,
    bulk: mpsc::Sender<Outgoing>,
}

impl PeerSender {
    /// Starts the sender tasks for the peer named `peer` at `addr`; batches
    /// say they come from `me`.
    pub(crate) fn start(
        me: String,
        peer: String,
        addr: String,
        token: Option<String>,
        tls: Option<rpc::ClientTls>,
        timeout: Duration,
    ) -> Result<Self, rpc::ConfigError> {
        let lane = |name: &'static str| -> Result<mpsc::Sender<Outgoing>, rpc::ConfigError> {
            // One connection per lane, so that the lanes never share one.
            let client = rpc::Client::new(
                &addr,
                rpc::ClientConfig {
                    token: token.clone(),
                    tls: tls.clone(),
                    default_timeout: timeout,
                    connect_timeout: timeout,
                    max_connections: 1,
                    ..Default::default()
                },
            )?;
            let (queue, rx) = mpsc::channel(QUEUE_LEN);
            let lane = Lane {
                name,
                me: me.clone(),
                peer: peer.clone(),
                addr: addr.clone(),
                client: RaftPeerClient::new(client),
            };
            tokio::spawn(lane.send_loop(rx));
            Ok(queue)
        };
        Ok(PeerSender {
            control: lane("control")?,
            bulk: lane("bulk")?,
        })
    }

    /// Queues a message in its lane; drops it if the queue is full.
    pub(crate) fn send(&self, m: Outgoing) {
        let (queue, lane) = if is_bulk(&m) {
            (&self.bulk, "bulk")
        } else {
            (&self.control, "control")
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = queue.try_send(m) {
            tracing::debug!(lane, "peer queue full; message dropped");
        }
    }
}

/// One lane's sender task.
struct Lane {
    name: &'static str,
    me: String,
    peer: String,
    addr: String,
    client: RaftPeerClient,
}

impl Lane {
    async fn send_loop(self, mut rx: mpsc::Receiver<Outgoing>) {
        let Lane {
            name: lane,
            me,
            peer,
            addr,
            client,
        } = self;
        let mut failing = false;
        let mut carry: Option<Outgoing> = None;
        loop {
            let first = match carry.take() {
                Some(m) => m,
                None => match rx.recv().await {
                    Some(m) => m,
                    None => return,
                },
            };
            let mut batch = MessageBatch {
                from: me.clone(),
                messages: Vec::new(),
                lifecycle: Vec::new(),
            };
            let mut next = Some(first);
            let (mut count, mut bytes) = (0, 0);
            while let Some(m) = next.take() {
                let size = payload_bytes(&m);
                if count > 0 && bytes + size > MAX_BATCH_BYTES {
                    // It opens the next call instead.
                    carry = Some(m);
                    break;
                }
                bytes += size;
                match m {
                    Outgoing::Raft(m) => batch.messages.push(m),
                    Outgoing::Lifecycle(m) => batch.lifecycle.push(m),
                }
                count += 1;
                if count < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                    next = rx.try_recv().ok();
                }
            }
            match client.deliver(&batch).await {
                Ok(_) if failing => {
                    tracing::info!(%peer, %addr, lane, "peer reachable again");
                    failing = false;
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    tracing::warn!(%peer, %addr, lane, error = %e, "cannot reach peer; dropping its messages until it answers");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use tokio::sync::Semaphore;

    use super::*;
    use crate::api::{Empty, KvsError, RaftPeer, RaftPeerServer};
    use crate::raft::{Body, Entry, Message, Payload};

    /// A peer that records what it receives and holds every call carrying
    /// entries until the test lets it go.
    #[derive(Clone)]
    struct Peer {
        seen: Arc<Mutex<Vec<Body>>>,
        gate: Arc<Semaphore>,
    }

    impl RaftPeer for Peer {
        async fn deliver(&self, req: MessageBatch) -> Result<Empty, KvsError> {
            let bulk = req.messages.iter().any(
                |m| matches!(&m.body, Body::AppendEntries { entries, .. } if !entries.is_empty()),
            );
            if let Ok(mut seen) = self.seen.lock() {
                seen.extend(req.messages.into_iter().map(|m| m.body));
            }
            if bulk {
                let _held = self.gate.acquire().await;
            }
            Ok(Empty {})
        }
    }

    fn message(body: Body) -> Outgoing {
        Outgoing::Raft(Message {
            from: 1,
            to: 2,
            term: 1,
            body,
        })
    }

    async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "timed out waiting until {what}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A follower hears its leader's heartbeats while megabytes of entries
    /// are on their way to it: a slow bulk transfer must not look like a
    /// dead leader (seen in CI: a follower behind 14 MiB of writes called
    /// an election, and a founding member gave up on a live cluster).
    #[tokio::test]
    async fn heartbeats_overtake_entries_in_flight() {
        let peer = Peer {
            seen: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
        };
        let server = rpc::Server::builder(rpc::Auth::None)
            .service(RaftPeerServer::new(peer.clone()))
            .build()
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(server.serve(listener, std::future::pending()));
        let sender = PeerSender::start(
            "n1".into(),
            "n2".into(),
            addr,
            None,
            None,
            Duration::from_secs(30),
        )
        .unwrap();

        let entry = Entry {
            term: 1,
            index: 1,
            payload: Payload::Command(vec![b'x'; 100 * 1024].into()),
        };
        sender.send(message(Body::AppendEntries {
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![entry],
            leader_commit: 0,
        }));
        let seen = Arc::clone(&peer.seen);
        wait_until("the entries arrived", || {
            seen.lock().is_ok_and(|s| !s.is_empty())
        })
        .await;
        // The call with the entries is still held by the peer.
        sender.send(message(Body::Heartbeat {
            commit: 0,
            read_seq: 0,
        }));
        wait_until("the heartbeat arrived", || {
            seen.lock()
                .is_ok_and(|s| s.iter().any(|b| matches!(b, Body::Heartbeat { .. })))
        })
        .await;
        peer.gate.add_permits(1);
    }
}
