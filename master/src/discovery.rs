//! Service discovery on this master: the DNS server's zone follows the
//! Endpoints in the store. Every master runs this, leader or not; the zone
//! is read from its own member, so a master cut off from the others keeps
//! answering from what it last knew (stale, not silent).
//!
//! Invariant: the zone is replaced whole, from one list of every
//! Endpoints, after every change under their prefix; a failed read keeps
//! the previous zone and is retried.

use std::time::Duration;

use api::Kind;
use api::service::Endpoints;
use dns::{Zone, ZoneConfig, ZoneHandle};

use crate::store::{Store, StoreError, prefix};

/// How long one watch waits for a change before it is renewed.
const WATCH_WAIT: Duration = Duration::from_secs(30);
/// Pause after a failed read.
const RETRY: Duration = Duration::from_millis(500);

/// Keeps `zone` equal to the zone of the stored Endpoints until `shutdown`.
pub async fn follow(
    store: Store,
    config: ZoneConfig,
    zone: ZoneHandle,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => {}
        _ = follow_forever(store, config, zone) => {}
    }
}

async fn follow_forever(store: Store, config: ZoneConfig, zone: ZoneHandle) {
    loop {
        let revision = match store.list::<Endpoints>(Kind::Endpoints, None).await {
            Ok((list, revision)) => {
                let objects: Vec<Endpoints> = list.objects.into_iter().map(|s| s.object).collect();
                match Zone::build(&config, &objects) {
                    Ok(z) => zone.set(z),
                    // The domain was checked at start; nothing else fails.
                    Err(e) => tracing::error!(error = %e, "building the DNS zone"),
                }
                revision
            }
            Err(e) => {
                tracing::debug!(error = %e, "reading Endpoints for DNS; the zone stays as it was");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let mut from = revision + 1;
        loop {
            match store
                .watch(prefix(Kind::Endpoints, None), from, WATCH_WAIT)
                .await
            {
                Ok((events, _)) if !events.is_empty() => break,
                Ok((_, next)) => from = next.max(from),
                Err(StoreError::Compacted(_)) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "watching Endpoints for DNS");
                    tokio::time::sleep(RETRY).await;
                    break;
                }
            }
        }
    }
}
