//! Leader election on a `coordination.k8s.io/v1` Lease, so that one replica acts at a time.
//!
//! Expiry is judged the way client-go does it: by how long the lease record has gone
//! unchanged on *our* clock, never by comparing our clock with the holder's timestamps.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::time::Instant;

/// Where the lease lives and how it is timed.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity, written as `holderIdentity`.
    pub identity: String,
    /// How long a lease that is not renewed stays valid.
    pub duration: Duration,
    /// How often the holder renews.
    pub renew_every: Duration,
    /// How often a standby replica tries to take the lease.
    pub retry_every: Duration,
}

/// Takes, renews and releases the lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The other holder's record as last seen, and when we first saw it that way.
    observed: Option<(String, Instant)>,
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        let api = Api::namespaced(client, &config.namespace);
        Self {
            api,
            config,
            observed: None,
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// One attempt: creates the lease, renews ours, or takes over an expired or released one.
    /// Returns whether this replica holds the lease afterwards. A write conflict (another
    /// replica was faster) is `Ok(false)`.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(jiff::Timestamp::now());
        let duration_secs = i32::try_from(self.config.duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return conflict_is_false(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.get_or_insert_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder == self.config.identity {
            spec.renew_time = Some(now);
            spec.lease_duration_seconds = Some(duration_secs);
            return conflict_is_false(
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await,
            );
        }
        if !holder.is_empty() && !self.expired(&holder, spec) {
            return Ok(false);
        }
        spec.holder_identity = Some(self.config.identity.clone());
        spec.lease_duration_seconds = Some(duration_secs);
        spec.acquire_time = Some(now.clone());
        spec.renew_time = Some(now);
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        let taken = conflict_is_false(
            self.api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await,
        )?;
        if taken {
            tracing::info!(previous = %holder, lease = %self.config.name, "took over the leader lease");
        }
        Ok(taken)
    }

    /// Gives the lease up so a standby replica takes over at its next retry instead of
    /// waiting for the lease to expire. Does nothing if another replica holds it.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        conflict_is_false(
            self.api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await,
        )
        .map(drop)
    }

    fn expired(&mut self, holder: &str, spec: &LeaseSpec) -> bool {
        let record = format!(
            "{holder}/{:?}/{:?}",
            spec.renew_time.as_ref().map(|t| t.0),
            spec.lease_duration_seconds
        );
        let lease_secs = spec.lease_duration_seconds.unwrap_or(0).max(0) as u64;
        match &self.observed {
            Some((seen, since)) if *seen == record => since.elapsed() > Duration::from_secs(lease_secs),
            _ => {
                self.observed = Some((record, Instant::now()));
                false
            }
        }
    }
}

fn conflict_is_false<T>(result: Result<T, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}
