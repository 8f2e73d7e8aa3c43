//! Reaching the cluster: clients of every configured master; a call goes
//! to the first that answers, so that one master down changes nothing.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use api::master::MasterClient;
use kvs_api::KvClient;

use crate::config::Target;
use crate::errors::CliError;

/// A boxed call on a client.
pub type Call<C, T> = Box<dyn Fn(C) -> Pin<Box<dyn Future<Output = Result<T, rpc::Error>>>>>;

/// Clients of the masters.
pub struct Conn {
    /// What the flags and the context say.
    pub target: Target,
    masters: Vec<(String, rpc::Client)>,
}

impl Conn {
    /// Clients of `target`'s servers (no connection is made yet).
    pub fn new(target: Target, timeout: Duration) -> Result<Conn, CliError> {
        let tls = match (&target.certificate_authority, target.insecure) {
            (_, true) => None,
            (Some(ca), false) => {
                let roots = rpc::Roots::from_file(ca)
                    .map_err(|e| CliError::client(format!("the certificate authority {e}")))?;
                // The server must be a master: not any holder of a
                // certificate of the CA (a worker's) at the address dialled.
                Some(
                    rpc::ClientTls::new(&roots, None)
                        .and_then(|t| t.expecting_group(pki::MASTERS))
                        .map_err(|e| {
                            CliError::client(format!(
                                "the certificate authority cannot be used: {e}"
                            ))
                        })?,
                )
            }
            (None, false) => {
                return Err(CliError::client(
                    "no certificate authority for the cluster: pass --certificate-authority FILE (the cluster's ca.crt) or set it in the context (mkctl config set-context --certificate-authority); --insecure talks plain HTTP to a cluster started with --insecure",
                ));
            }
        };
        let mut masters = Vec::new();
        for s in &target.servers {
            let config = rpc::ClientConfig {
                token: target.token.clone(),
                tls: tls.clone(),
                server_name: target.tls_server_name.clone(),
                default_timeout: timeout,
                connect_timeout: Duration::from_secs(3),
                max_connections: 2,
                ..Default::default()
            };
            let client = rpc::Client::new(s, config).map_err(|e| {
                CliError::client(format!("the server address {s:?} is invalid: {e}"))
            })?;
            masters.push((s.clone(), client));
        }
        if masters.is_empty() {
            return Err(CliError::client("no server given"));
        }
        Ok(Conn { target, masters })
    }

    /// Runs `call` on the first master that answers.
    pub async fn master<T>(&self, call: Call<MasterClient, T>) -> Result<T, CliError> {
        self.first(|c| call(MasterClient::new(c))).await
    }

    /// Runs `call` on the first member whose `Kv` service answers.
    pub async fn kv<T>(&self, call: Call<KvClient, T>) -> Result<T, CliError> {
        self.first(|c| call(KvClient::new(c))).await
    }

    async fn first<T, F>(&self, call: impl Fn(rpc::Client) -> F) -> Result<T, CliError>
    where
        F: Future<Output = Result<T, rpc::Error>>,
    {
        let mut unreachable = Vec::new();
        for (addr, client) in &self.masters {
            match call(client.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let err = CliError::from_rpc(&e, addr);
                    if !err.is_unreachable() {
                        return Err(err);
                    }
                    unreachable.push(err);
                }
            }
        }
        match unreachable.len() {
            1 => Err(unreachable.remove(0)),
            _ => Err(CliError::client(format!(
                "cannot reach the cluster: tried {}",
                self.masters
                    .iter()
                    .map(|(a, _)| a.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// A client of one address, for per-member calls (`cluster status`).
    pub fn member(&self, addr: &str) -> Option<KvClient> {
        self.masters
            .iter()
            .find(|(a, _)| a == addr)
            .map(|(_, c)| KvClient::new(c.clone()))
    }

    /// The configured addresses.
    pub fn addresses(&self) -> Vec<String> {
        self.masters.iter().map(|(a, _)| a.clone()).collect()
    }
}

/// `conn.master(call!(method, req))`: the boxed call of one method.
#[macro_export]
macro_rules! call {
    ($method:ident, $req:expr) => {{
        let req = $req;
        Box::new(move |c| {
            let req = req.clone();
            Box::pin(async move { c.$method(&req).await })
        })
    }};
}
