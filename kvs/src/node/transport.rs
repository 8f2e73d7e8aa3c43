//! Outgoing Raft messages: one queue and one sender task per peer.
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
use crate::raft::{Message, NodeId};

/// Messages waiting for one peer.
const QUEUE_LEN: usize = 4096;
/// Most messages in one call.
const MAX_BATCH: usize = 1024;

/// The sending side of one peer's queue.
pub(crate) struct PeerSender {
    queue: mpsc::Sender<Message>,
}

impl PeerSender {
    /// Starts the sender task for `peer` at `addr`.
    pub(crate) fn start(
        peer: NodeId,
        addr: String,
        token: Option<String>,
        timeout: Duration,
    ) -> Result<Self, rpc::ConfigError> {
        let client = rpc::Client::new(
            &addr,
            rpc::ClientConfig {
                token,
                default_timeout: timeout,
                connect_timeout: timeout,
                max_connections: 1,
                ..Default::default()
            },
        )?;
        let client = RaftPeerClient::new(client);
        let (queue, rx) = mpsc::channel(QUEUE_LEN);
        tokio::spawn(send_loop(peer, addr, client, rx));
        Ok(PeerSender { queue })
    }

    /// Queues a message; drops it if the queue is full.
    pub(crate) fn send(&self, m: Message) {
        if let Err(mpsc::error::TrySendError::Full(m)) = self.queue.try_send(m) {
            tracing::debug!(to = m.to, "peer queue full; message dropped");
        }
    }
}

async fn send_loop(
    peer: NodeId,
    addr: String,
    client: RaftPeerClient,
    mut rx: mpsc::Receiver<Message>,
) {
    let mut failing = false;
    while let Some(first) = rx.recv().await {
        let mut messages = vec![first];
        while messages.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => messages.push(m),
                Err(_) => break,
            }
        }
        match client.deliver(&MessageBatch { messages }).await {
            Ok(_) if failing => {
                tracing::info!(peer, %addr, "peer reachable again");
                failing = false;
            }
            Ok(_) => {}
            Err(e) if !failing => {
                tracing::warn!(peer, %addr, error = %e, "cannot reach peer; dropping its messages until it answers");
                failing = true;
            }
            Err(_) => {}
        }
    }
}
