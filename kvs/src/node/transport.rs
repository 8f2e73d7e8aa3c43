//! Outgoing Raft and lifecycle messages: one queue and one sender task per
//! peer name (an address; the incarnation behind it changes over time).
//!
//! ```text
//! raft loop ──try_send──▶ [queue, bounded] ──▶ sender task: take everything queued,
//!                                               one RaftPeer.deliver call, repeat
//! ```
//!
//! Invariants: the raft loop never waits on a peer (a full queue drops the
//! message, which Raft tolerates like any loss); each peer has at most one
//! call in flight, so messages queue up while it runs and leave as one batch;
//! a dead or slow peer only ever delays its own queue.

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

/// The sending side of one peer's queue.
pub(crate) struct PeerSender {
    queue: mpsc::Sender<Outgoing>,
}

impl PeerSender {
    /// Starts the sender task for the peer named `peer` at `addr`; batches
    /// say they come from `me`.
    pub(crate) fn start(
        me: String,
        peer: String,
        addr: String,
        token: Option<String>,
        tls: Option<rpc::ClientTls>,
        timeout: Duration,
    ) -> Result<Self, rpc::ConfigError> {
        let client = rpc::Client::new(
            &addr,
            rpc::ClientConfig {
                token,
                tls,
                default_timeout: timeout,
                connect_timeout: timeout,
                max_connections: 1,
                ..Default::default()
            },
        )?;
        let client = RaftPeerClient::new(client);
        let (queue, rx) = mpsc::channel(QUEUE_LEN);
        tokio::spawn(send_loop(me, peer, addr, client, rx));
        Ok(PeerSender { queue })
    }

    /// Queues a message; drops it if the queue is full.
    pub(crate) fn send(&self, m: Outgoing) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.queue.try_send(m) {
            tracing::debug!("peer queue full; message dropped");
        }
    }
}

async fn send_loop(
    me: String,
    peer: String,
    addr: String,
    client: RaftPeerClient,
    mut rx: mpsc::Receiver<Outgoing>,
) {
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
                tracing::info!(%peer, %addr, "peer reachable again");
                failing = false;
            }
            Ok(_) => {}
            Err(e) if !failing => {
                tracing::warn!(%peer, %addr, error = %e, "cannot reach peer; dropping its messages until it answers");
                failing = true;
            }
            Err(_) => {}
        }
    }
}
