//! The connection to etcd: endpoints, TLS, timeouts, the cluster settings,
//! and errors that say why etcd cannot be used (each endpoint is probed
//! directly when a request fails, so that a wrong CA is named as such).

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, Identity, TlsOptions, Txn, TxnOp,
    TxnOpResponse,
};

use crate::model::cluster::{settings_key, ClusterSettings};
use crate::model::config::cluster::ClusterConfig;
use crate::sources::cluster::ClusterError;

/// How long one request may take before etcd counts as unreachable.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause before a request that did not reach a member is sent again.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How long a connection attempt to one endpoint may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A client of the cluster's etcd, with the overlay's key prefix.
#[derive(Clone)]
pub struct Store {
    client: Client,
    endpoints: Vec<String>,
    prefix: String,
    tls: Option<TlsOptions>,
    ca_file: Option<PathBuf>,
}

/// What `cluster init` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Init {
    /// The settings were written.
    Created,
    /// The same settings were there already.
    Unchanged,
    /// Other settings were overwritten (`--force`); these were the old ones.
    Replaced(ClusterSettings),
}

/// The member that answered, the leader, and the store's revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// "name (client URL)".
    pub member: String,
    /// The leader's name.
    pub leader: String,
    /// The store's revision.
    pub revision: i64,
}

fn read_file(field: &'static str, path: &PathBuf) -> Result<Vec<u8>, ClusterError> {
    std::fs::read(path).map_err(|source| ClusterError::TlsFile {
        field,
        path: path.clone(),
        source,
    })
}

/// The TLS settings of `cfg` (`None` for http:// endpoints).
fn tls_options(cfg: &ClusterConfig) -> Result<Option<TlsOptions>, ClusterError> {
    if !cfg.uses_tls() {
        return Ok(None);
    }
    let mut tls = TlsOptions::new();
    if let Some(ca) = &cfg.ca_file {
        tls = tls.ca_certificate(Certificate::from_pem(read_file("ca_file", ca)?));
    }
    if let (Some(cert), Some(key)) = (&cfg.cert_file, &cfg.key_file) {
        tls = tls.identity(Identity::from_pem(
            read_file("cert_file", cert)?,
            read_file("key_file", key)?,
        ));
    }
    Ok(Some(tls))
}

/// An error and its sources, "a: b: c", without repeats.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// Whether `e` means the request never reached a working etcd (as opposed to etcd refusing it).
fn is_connection(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(s) => {
            matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
            ) && !s.message().starts_with("etcdserver:")
        }
        _ => false,
    }
}

impl Store {
    /// A client for `cfg`'s endpoints (validated config). Connecting is
    /// lazy: an unreachable etcd shows at the first request.
    pub async fn connect(cfg: &ClusterConfig) -> Result<Store, ClusterError> {
        let tls = tls_options(cfg)?;
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            .with_keep_alive_while_idle(true);
        if let Some(t) = &tls {
            opts = opts.with_tls(t.clone());
        }
        let client =
            Client::connect(&cfg.etcd, Some(opts))
                .await
                .map_err(|e| ClusterError::Client {
                    endpoints: cfg.etcd.join(", "),
                    reason: e.to_string(),
                })?;
        Ok(Store {
            client,
            endpoints: cfg.etcd.clone(),
            prefix: cfg.prefix.clone(),
            tls,
            ca_file: cfg.ca_file.clone(),
        })
    }

    /// The etcd client (cheap to clone).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The overlay's key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The configured endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Run one request, made by `request` with a client, within
    /// [`CALL_TIMEOUT`]; `what` names it in errors. A request that did not
    /// reach a working member (one of several may be down) is sent again,
    /// to let the client pick another member.
    pub async fn call<T, F, Fut>(
        &self,
        what: impl Into<String>,
        mut request: F,
    ) -> Result<T, ClusterError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
        loop {
            let last = match tokio::time::timeout_at(deadline, request(self.client())).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if is_connection(&e) => chain(&e),
                Ok(Err(e)) => {
                    return Err(ClusterError::Etcd {
                        what: what.into(),
                        reason: chain(&e),
                    })
                }
                Err(_) => {
                    let waited = format!("no answer within {} s", CALL_TIMEOUT.as_secs());
                    return Err(self.explain(&waited).await);
                }
            };
            // Worth another try only if some member can be reached.
            let probes = self.probe_all().await;
            if probes.iter().all(Result::is_err)
                || tokio::time::Instant::now() + RETRY_PAUSE >= deadline
            {
                return Err(self.explanation(probes, &last));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Each endpoint probed directly (TCP, TLS, HTTP/2), in order.
    async fn probe_all(&self) -> Vec<Result<(), String>> {
        futures::future::join_all(self.endpoints.iter().map(|url| self.probe(url))).await
    }

    /// Why no endpoint answered: each is probed directly (TCP, TLS, HTTP/2).
    /// `request_error` is what the failed request reported.
    pub async fn explain(&self, request_error: &str) -> ClusterError {
        let probes = self.probe_all().await;
        self.explanation(probes, request_error)
    }

    fn explanation(&self, probes: Vec<Result<(), String>>, request_error: &str) -> ClusterError {
        let mut reasons = Vec::new();
        for (url, probe) in self.endpoints.iter().zip(probes) {
            if let Err(reason) = probe {
                let tls_trust = ["UnknownIssuer", "BadSignature", "unknown issuer"];
                if tls_trust.iter().any(|t| reason.contains(t)) {
                    if let Some(ca_file) = &self.ca_file {
                        return ClusterError::WrongCa {
                            endpoint: url.clone(),
                            ca_file: ca_file.clone(),
                            reason,
                        };
                    }
                }
                reasons.push(format!("{url}: {reason}"));
            }
        }
        if reasons.is_empty() {
            reasons.push(format!(
                "the endpoints accept connections but the request failed ({request_error}); has the cluster lost its quorum?"
            ));
        }
        ClusterError::Unreachable {
            endpoints: self.endpoints.join(", "),
            reason: reasons.join("; "),
        }
    }

    async fn probe(&self, url: &str) -> Result<(), String> {
        let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
            .map_err(|e| chain(&e))?
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(|e| chain(&e))?;
        }
        match tokio::time::timeout(CONNECT_TIMEOUT + Duration::from_secs(1), endpoint.connect())
            .await
        {
            Ok(Ok(_channel)) => Ok(()),
            Ok(Err(e)) => Err(chain(&e)),
            Err(_) => Err(format!(
                "no connection within {} s",
                CONNECT_TIMEOUT.as_secs() + 1
            )),
        }
    }

    /// The cluster settings.
    pub async fn settings(&self) -> Result<ClusterSettings, ClusterError> {
        let key = settings_key(&self.prefix);
        let resp = self
            .call(format!("reading {key}"), |mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        let kv = resp
            .kvs()
            .first()
            .ok_or_else(|| ClusterError::NoSettings { key: key.clone() })?;
        parse_settings(&key, kv.value())
    }

    /// Write the cluster settings unless other ones are there (then only with `force`).
    pub async fn init(
        &self,
        settings: &ClusterSettings,
        force: bool,
    ) -> Result<Init, ClusterError> {
        settings.validate()?;
        let key = settings_key(&self.prefix);
        let value = serde_json::to_string(settings).expect("settings serialize");
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), value.clone(), None)])
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = self
            .call(format!("writing {key}"), |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        if resp.succeeded() {
            return Ok(Init::Created);
        }
        let old = resp
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
                _ => None,
            })
            .unwrap_or_default();
        // Unreadable old settings are overwritten only with force, like different ones.
        let old = parse_settings(&key, &old);
        match old {
            Ok(old) if &old == settings => Ok(Init::Unchanged),
            Ok(old) if !force => Err(ClusterError::SettingsDiffer {
                key,
                differences: old.differences(settings).join(", "),
            }),
            Err(e) if !force => Err(e),
            old => {
                self.call(format!("writing {key}"), |mut c| {
                    let (key, value) = (key.clone(), value.clone());
                    async move { c.put(key, value, None).await }
                })
                .await?;
                Ok(match old {
                    Ok(old) => Init::Replaced(old),
                    Err(_) => Init::Created,
                })
            }
        }
    }

    /// Which member answers, who leads, and the revision.
    pub async fn member(&self) -> Result<MemberInfo, ClusterError> {
        let status = self
            .call("reading the member's status", |mut c| async move {
                c.status().await
            })
            .await?;
        let members = self
            .call("listing the members", |mut c| async move {
                c.member_list().await
            })
            .await?;
        let name = |id: u64| {
            members
                .members()
                .iter()
                .find(|m| m.id() == id)
                .map(|m| (m.name().to_string(), m.client_urls().join(",")))
        };
        let (member_id, revision) = status
            .header()
            .map(|h| (h.member_id(), h.revision()))
            .unwrap_or_default();
        let member = match name(member_id) {
            Some((n, urls)) => format!("{n} ({urls})"),
            None => format!("{member_id:x}"),
        };
        let leader = name(status.leader())
            .map(|(n, _)| n)
            .unwrap_or_else(|| format!("{:x}", status.leader()));
        Ok(MemberInfo {
            member,
            leader,
            revision,
        })
    }
}

/// Parse and check the settings stored at `key`.
pub fn parse_settings(key: &str, value: &[u8]) -> Result<ClusterSettings, ClusterError> {
    let bad = |reason: String| ClusterError::BadValue {
        key: key.to_string(),
        reason,
    };
    let settings: ClusterSettings =
        serde_json::from_slice(value).map_err(|e| bad(e.to_string()))?;
    settings.validate().map_err(|e| bad(e.to_string()))?;
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let e = parse_settings("/o/config", b"{\"pool\":\"10.0.0.0/8\"}").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/o/config in etcd is not valid: missing field"),
            "{e}"
        );
        let e = parse_settings(
            "/o/config",
            br#"{"pool":"10.0.0.0/16","subnet_len":8,"vni":1,"port":4789}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/o/config in etcd is not valid: subnet length /8 does not fit pool 10.0.0.0/16; expected /16 to /30"
        );
    }

    #[test]
    fn error_chains_skip_repeats() {
        let inner = std::io::Error::other("connection refused");
        let outer = std::io::Error::other(format!("tcp connect error: {inner}"));
        assert_eq!(chain(&outer), "tcp connect error: connection refused");
    }
}
