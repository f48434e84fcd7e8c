//! This host's endpoint records: published at
//! `<prefix>/endpoints/<network>/<ip>` under this host's etcd lease (a dead
//! host's records expire with it), withdrawn when the container goes, and
//! published again when the registry had to take a new lease.

use std::net::Ipv4Addr;

use etcd_client::{Compare, CompareOp, PutOptions, TxnOp};

use crate::model::network_store::{check_network_name, endpoint_key};
use crate::model::overlay_network::EndpointRecord;
use crate::sources::cluster::directory::{Directory, Read};
use crate::sources::cluster::ClusterError;

impl Directory {
    /// `record` with this host's name and underlay address filled in where
    /// empty; refused when it names another host.
    pub(super) fn own_record(
        &self,
        record: &EndpointRecord,
    ) -> Result<EndpointRecord, ClusterError> {
        let mut r = record.clone();
        if r.host.is_empty() {
            r.host = self.me.clone();
        }
        if r.underlay_ip.is_unspecified() {
            r.underlay_ip = self.underlay_ip;
        }
        if r.host != self.me || r.underlay_ip != self.underlay_ip {
            return Err(ClusterError::NotThisHost {
                network: r.network,
                ip: r.ip,
                host: r.host,
                underlay_ip: r.underlay_ip,
                me: self.me.clone(),
                my_ip: self.underlay_ip,
            });
        }
        Ok(r)
    }

    /// Write `record` under `lease`, unless another host's record is at its key.
    async fn write(&self, record: &EndpointRecord, lease: i64) -> Result<(), ClusterError> {
        let key = endpoint_key(self.prefix(), &record.network, record.ip);
        let existing: Option<Read<EndpointRecord>> = self.read_key(&key).await?;
        let compare = match &existing {
            Some(read) => {
                if let Some(other) = read.value.as_ref().ok().filter(|o| o.host != self.me) {
                    return Err(ClusterError::AddressHeld {
                        ip: record.ip,
                        network: record.network.clone(),
                        holder: other.container.clone(),
                        host: other.host.clone(),
                    });
                }
                Compare::mod_revision(key.clone(), CompareOp::Equal, read.mod_revision)
            }
            None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
        };
        let value = serde_json::to_string(record).expect("records serialize");
        let txn = etcd_client::Txn::new()
            .when([compare])
            .and_then([TxnOp::put(
                key.clone(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        if !self.txn(format!("writing {key}"), txn).await?.succeeded() {
            return Err(ClusterError::Contended {
                what: format!("writing {key}"),
                tries: 1,
            });
        }
        Ok(())
    }

    /// Publish this host's endpoint so that every host installs it.
    pub async fn publish(&self, record: &EndpointRecord) -> Result<(), ClusterError> {
        let record = self.own_record(record)?;
        let (spec, _) = self.spec_of(&record.network).await?;
        spec.check_member(record.ip)?;
        let lease = self.state.id();
        if lease == 0 {
            return Err(ClusterError::NoLease);
        }
        self.write(&record, lease).await?;
        let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        published
            .records
            .insert((record.network.clone(), record.ip), record.clone());
        if published.lease == 0 {
            published.lease = lease;
        }
        log::info!(
            "cluster: published endpoint {} on network {} ({})",
            record.ip,
            record.network,
            record.container
        );
        Ok(())
    }

    /// Withdraw this host's endpoint at `ip` on `network`; another host's
    /// record there is left alone, a missing one is fine.
    pub async fn withdraw(&self, network: &str, ip: Ipv4Addr) -> Result<(), ClusterError> {
        check_network_name(network)?;
        self.published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .records
            .remove(&(network.to_string(), ip));
        let key = endpoint_key(self.prefix(), network, ip);
        let Some(read) = self.read_key::<EndpointRecord>(&key).await? else {
            return Ok(());
        };
        if read.value.as_ref().is_ok_and(|r| r.host != self.me) {
            log::debug!("cluster: not withdrawing {key}: another host's record");
            return Ok(());
        }
        let txn = etcd_client::Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                read.mod_revision,
            )])
            .and_then([TxnOp::delete(key.clone(), None)]);
        self.txn(format!("deleting {key}"), txn).await?;
        log::info!("cluster: withdrew endpoint {ip} on network {network}");
        Ok(())
    }

    /// Publish every endpoint record again if this host's etcd lease changed
    /// since (the old one expired with them); errors are logged.
    pub async fn republish(&self) {
        let lease = self.state.id();
        let records: Vec<EndpointRecord> = {
            let published = self.published.lock().unwrap_or_else(|e| e.into_inner());
            if lease == 0 || published.lease == lease || published.records.is_empty() {
                return;
            }
            published.records.values().cloned().collect()
        };
        let mut ok = true;
        for r in &records {
            if let Err(e) = self.write(r, lease).await {
                log::warn!(
                    "cluster: publishing endpoint {} on network {} again: {e}",
                    r.ip,
                    r.network
                );
                ok &= !e.is_unreachable();
            }
        }
        if ok {
            self.published
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .lease = lease;
            log::info!(
                "cluster: published {} endpoints again under lease {lease:x}",
                records.len()
            );
        }
    }
}
