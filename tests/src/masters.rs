//! What the end-to-end helpers need of a running cluster, whether its
//! masters are processes ([`crate::cluster::Cluster`]) or containers
//! ([`crate::netcluster::NetCluster`]): clients, the store's view of each
//! master, the leader, and waiting on a condition with a deadline that
//! prints the cluster's logs when it fails.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use api::master::{ListRequest, ListResponse, MasterClient};
use kvs::api::{Empty, KvClient, NodeStatus};

use crate::testpki::Credentials;

/// A `Kv` client of the member at `addr`, calling as `creds` say.
pub fn kv_client_at(addr: &str, creds: &Credentials, timeout: Duration) -> Result<KvClient> {
    let config = rpc::ClientConfig {
        token: Some(creds.token.clone()),
        tls: creds.tls.clone(),
        default_timeout: timeout,
        connect_timeout: timeout.min(Duration::from_secs(2)) / 2,
        ..Default::default()
    };
    Ok(KvClient::new(rpc::Client::new(addr, config)?))
}

/// The store's view of the member at `addr`.
pub async fn kv_status_at(addr: &str, creds: &Credentials) -> Result<NodeStatus> {
    let kv = kv_client_at(addr, creds, Duration::from_secs(2))?;
    Ok(kv.status(&Empty {}).await?)
}

/// A `Master` client of the address `addr`.
pub fn client_at(addr: &str, creds: &Credentials) -> Result<MasterClient> {
    let config = rpc::ClientConfig {
        token: Some(creds.token.clone()),
        tls: creds.tls.clone(),
        default_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    Ok(MasterClient::new(rpc::Client::new(addr, config)?))
}

/// A running cluster's masters, seen from the test.
#[allow(async_fn_in_trait)]
pub trait Masters: Sync + Sized {
    /// How many masters it was started with.
    fn master_count(&self) -> usize;
    /// Master `i`'s address.
    fn master_addr(&self, i: usize) -> String;
    /// The last lines of every process's log.
    fn logs(&self) -> String;
    /// What the tests call the masters with (a user's token and the CA).
    fn credentials(&self) -> &Credentials;
    /// Whether master `i` is meant to be running (not killed by the test).
    fn running(&self, _i: usize) -> bool {
        true
    }

    /// A client of master `i`.
    fn client(&self, i: usize) -> Result<MasterClient> {
        client_at(&self.master_addr(i), self.credentials())
    }

    /// Master `i`'s own view of the store.
    async fn kv_status(&self, i: usize) -> Result<NodeStatus> {
        kv_status_at(&self.master_addr(i), self.credentials()).await
    }

    /// The master that leads, if one does (among those reachable).
    async fn leader(&self) -> Option<usize> {
        for i in 0..self.master_count() {
            if !self.running(i) {
                continue;
            }
            if let Ok(s) = self.kv_status(i).await
                && s.role == kvs::raft::Role::Leader
            {
                return Some(i);
            }
        }
        None
    }

    /// Whether a leader leads a configuration of exactly the running
    /// masters' incarnations, all voters (a master that started late joins
    /// as a learner first; losing the leader before its promotion leaves no
    /// quorum).
    async fn settled(&self) -> bool {
        let Some(l) = self.leader().await else {
            return false;
        };
        let Ok(leader) = self.kv_status(l).await else {
            return false;
        };
        if leader.members.len() != self.master_count() || leader.members.iter().any(|m| !m.voter) {
            return false;
        }
        for i in 0..self.master_count() {
            match self.kv_status(i).await {
                Ok(s) if leader.members.iter().any(|m| m.id == s.id) => {}
                _ => return false,
            }
        }
        true
    }

    /// A client of the first master that answers.
    async fn any_client(&self) -> Result<MasterClient> {
        for i in 0..self.master_count() {
            if self.running(i) && self.kv_status(i).await.is_ok() {
                return self.client(i);
            }
        }
        bail!("no master answers")
    }

    /// Every object of `kind` in every namespace (matching `selector`,
    /// kubectl's `-l` syntax), from the first master that answers.
    async fn list_all(&self, kind: &str, selector: Option<&str>) -> Result<ListResponse> {
        let request = ListRequest {
            kind: kind.into(),
            label_selector: selector.map(str::to_string),
            ..Default::default()
        };
        Ok(self.any_client().await?.list(&request).await?)
    }

    /// Names of Ready nodes.
    async fn ready_nodes(&self) -> Result<Vec<String>> {
        let list = self.list_all("nodes", None).await?;
        let mut names = Vec::new();
        for item in list.items {
            let node: api::Node = serde_json::from_value(item)?;
            if node.is_ready() {
                names.push(node.metadata.name);
            }
        }
        Ok(names)
    }

    /// Waits until the leader has exported a state covering log `index`.
    async fn wait_for_export(&self, index: u64, within: Duration) -> Result<()> {
        self.wait_for(
            within,
            &format!("an export covering index {index}"),
            |c| async move {
                let Some(l) = c.leader().await else {
                    return Ok(None);
                };
                let s = c.kv_status(l).await?;
                Ok(s.last_export.filter(|e| e.index >= index).map(|_| ()))
            },
        )
        .await
    }

    /// Polls `check` until it returns `Some`, failing with the cluster's
    /// logs after `within`.
    async fn wait_for<'a, T, F, Fut>(&'a self, within: Duration, what: &str, check: F) -> Result<T>
    where
        F: Fn(&'a Self) -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>>>,
    {
        let deadline = Instant::now() + within;
        let mut last_error = None;
        loop {
            match check(self).await {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) => last_error = Some(e),
            }
            if Instant::now() > deadline {
                bail!(
                    "{what}: not reached within {within:?} (last error: {last_error:?})\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
