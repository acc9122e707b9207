//! The manual gates (`/gate/*`, `/rollback/*`): which are open, kept in a ConfigMap so that
//! they survive a restart of the load tester, or in memory when no ConfigMap is configured.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use super::Error;

/// The value of an open gate in the ConfigMap's `data`; closed gates have no key.
pub const OPEN: &str = "open";
/// Attempts at a read-modify-write of the ConfigMap when another writer got there first.
const WRITE_ATTEMPTS: usize = 5;

/// The two families of gates, as Flagger keys them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateKind {
    /// `/gate/*`: `<name>.<namespace>`, for `confirm-*` webhooks.
    Approval,
    /// `/rollback/*`: `rollback.<name>.<namespace>`, for `rollback` webhooks.
    Rollback,
}

/// The key of a canary's gate: Flagger's, so it is also a valid ConfigMap data key for any
/// Kubernetes name and namespace.
pub fn gate_key(kind: GateKind, name: &str, namespace: &str) -> String {
    match kind {
        GateKind::Approval => format!("{name}.{namespace}"),
        GateKind::Rollback => format!("rollback.{name}.{namespace}"),
    }
}

/// Whether `key` can be a ConfigMap data key (`[-._a-zA-Z0-9]+`, at most 253 characters).
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// The open gates recorded in a ConfigMap's data.
pub fn open_in(data: Option<&BTreeMap<String, String>>) -> BTreeSet<String> {
    data.into_iter()
        .flatten()
        .filter(|(_, value)| value.as_str() == OPEN)
        .map(|(key, _)| key.clone())
        .collect()
}

/// `data` with the gate `key` opened or closed; other keys are kept as they are.
pub fn with_gate(data: Option<BTreeMap<String, String>>, key: &str, open: bool) -> BTreeMap<String, String> {
    let mut data = data.unwrap_or_default();
    if open {
        data.insert(key.to_string(), OPEN.to_string());
    } else {
        data.remove(key);
    }
    data
}

/// Where the gates are kept besides memory.
#[derive(Clone)]
struct Store {
    api: Api<ConfigMap>,
    name: String,
    namespace: String,
}

/// The open gates (every gate starts closed, as in Flagger).
pub struct Gates {
    open: RwLock<BTreeSet<String>>,
    store: Option<Store>,
    /// One read-modify-write of the ConfigMap at a time from this process.
    writing: tokio::sync::Mutex<()>,
}

impl Gates {
    /// Gates in memory only: a restart closes them all.
    pub fn in_memory() -> Self {
        Self {
            open: RwLock::default(),
            store: None,
            writing: tokio::sync::Mutex::new(()),
        }
    }

    /// Gates kept in the ConfigMap `namespace/name`, created empty if missing, and loaded
    /// from it now.
    pub async fn in_config_map(client: Client, namespace: &str, name: &str) -> Result<Self, Error> {
        let store = Store {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            namespace: namespace.to_string(),
        };
        let open = match store.get().await? {
            Some(config_map) => open_in(config_map.data.as_ref()),
            None => {
                store
                    .create(BTreeMap::new())
                    .await
                    .map_err(|e| store.save_error(e.to_string()))?;
                BTreeSet::new()
            }
        };
        tracing::info!(
            configmap = %name, namespace = %namespace, open = open.len(),
            "gates are kept in a ConfigMap"
        );
        Ok(Self {
            open: RwLock::new(open),
            store: Some(store),
            writing: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether the gate `key` is open.
    pub fn is_open(&self, key: &str) -> bool {
        self.open.read().map(|open| open.contains(key)).unwrap_or(false)
    }

    /// The open gates, sorted.
    pub fn open_gates(&self) -> Vec<String> {
        self.open
            .read()
            .map(|open| open.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Opens or closes the gate `key`: in the ConfigMap first, if there is one, so that an
    /// answer of success means the change survives a restart.
    pub async fn set(&self, key: &str, open: bool) -> Result<(), Error> {
        let _writing = self.writing.lock().await;
        if let Some(store) = &self.store {
            let stored = store.set(key, open).await?;
            if let Ok(mut memory) = self.open.write() {
                // What the ConfigMap holds now, including other writers' changes.
                *memory = stored;
            }
            return Ok(());
        }
        if let Ok(mut memory) = self.open.write() {
            if open {
                memory.insert(key.to_string());
            } else {
                memory.remove(key);
            }
        }
        Ok(())
    }
}

impl Store {
    fn save_error(&self, reason: String) -> Error {
        Error::SaveGates {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            reason,
        }
    }

    async fn get(&self) -> Result<Option<ConfigMap>, Error> {
        self.api
            .get_opt(&self.name)
            .await
            .map_err(|source| Error::LoadGates {
                name: self.name.clone(),
                namespace: self.namespace.clone(),
                source,
            })
    }

    async fn create(&self, data: BTreeMap<String, String>) -> Result<ConfigMap, kube::Error> {
        let config_map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_string(),
                    "flaggit-loadtester".to_string(),
                )])),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..ConfigMap::default()
        };
        match self.api.create(&PostParams::default(), &config_map).await {
            // Created meanwhile by another replica: as good.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(config_map),
            other => other,
        }
    }

    /// Read-modify-write with the resourceVersion read, retried on conflicts; returns the
    /// open gates as stored.
    async fn set(&self, key: &str, open: bool) -> Result<BTreeSet<String>, Error> {
        let mut last = String::new();
        for _ in 0..WRITE_ATTEMPTS {
            let written = match self.get().await? {
                None => self.create(with_gate(None, key, open)).await,
                Some(mut config_map) => {
                    config_map.data = Some(with_gate(config_map.data.take(), key, open));
                    self.api
                        .replace(&self.name, &PostParams::default(), &config_map)
                        .await
                }
            };
            match written {
                Ok(config_map) => return Ok(open_in(config_map.data.as_ref())),
                Err(kube::Error::Api(status)) if status.code == 409 => last = status.message,
                Err(e) => return Err(self.save_error(e.to_string())),
            }
        }
        Err(self.save_error(format!(
            "still conflicting after {WRITE_ATTEMPTS} attempts: {last}"
        )))
    }
}
