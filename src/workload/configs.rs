//! The ConfigMaps and Secrets a target uses: reading the tracked ones and writing their
//! `-primary` copies. Secret data is copied, hashed and never logged.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, Secret};
use kube::api::ObjectMeta;
use kube::{Api, Client};

use super::Error;
use super::template::{
    ConfigKind, ConfigRef, config_map_checksum, config_references, filter_metadata, primary_name,
    secret_checksum, secret_type_tracked, tracking_disabled,
};
use crate::api::Canary;
use crate::objects;

/// A tracked ConfigMap or Secret as read from the cluster.
#[derive(Clone)]
pub enum ConfigObject {
    ConfigMap(ConfigMap),
    Secret(Secret),
}

impl ConfigObject {
    /// Flagger's checksum of the object's data.
    fn checksum(&self) -> String {
        match self {
            Self::ConfigMap(config) => config_map_checksum(config.data.as_ref()),
            Self::Secret(secret) => secret_checksum(secret.data.as_ref()),
        }
    }
}

/// The tracked ConfigMaps and Secrets of a target's pod spec, read from the cluster: those
/// that exist, are not opted out, and (Secrets) are of a tracked type. A missing required
/// one is an error; a missing optional one is skipped. `target` names the target in errors.
pub async fn read(
    client: &Client,
    namespace: &str,
    spec: Option<&PodSpec>,
    target: &str,
    enabled: bool,
) -> Result<BTreeMap<ConfigRef, ConfigObject>, Error> {
    let mut found = BTreeMap::new();
    let Some(spec) = spec.filter(|_| enabled) else {
        return Ok(found);
    };
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for (config, optional) in config_references(spec) {
        let get_error = |source| Error::Get {
            kind: config.kind.kind(),
            name: config.name.clone(),
            source,
        };
        let object = match config.kind {
            ConfigKind::ConfigMap => config_maps
                .get_opt(&config.name)
                .await
                .map_err(get_error)?
                .map(ConfigObject::ConfigMap),
            ConfigKind::Secret => secrets
                .get_opt(&config.name)
                .await
                .map_err(get_error)?
                .map(ConfigObject::Secret),
        };
        let Some(object) = object else {
            if optional {
                continue;
            }
            return Err(Error::ConfigNotFound {
                kind: config.kind.kind(),
                namespace: namespace.to_string(),
                name: config.name.clone(),
                target: target.to_string(),
            });
        };
        let tracked = match &object {
            ConfigObject::ConfigMap(c) => !tracking_disabled(c.metadata.annotations.as_ref()),
            ConfigObject::Secret(s) => {
                secret_type_tracked(s.type_.as_deref()) && !tracking_disabled(s.metadata.annotations.as_ref())
            }
        };
        if tracked {
            found.insert(config, object);
        }
    }
    Ok(found)
}

/// `configmap/<name>` / `secret/<name>` -> checksum, as in `status.trackedConfigs`.
pub fn checksums(configs: &BTreeMap<ConfigRef, ConfigObject>) -> BTreeMap<String, String> {
    configs
        .iter()
        .map(|(config, object)| (config.key(), object.checksum()))
        .collect()
}

/// Checksums of the `-primary` copies of the configs named by `keys` (`configmap/<name>`,
/// `secret/<name>`, as in `status.trackedConfigs`): what the primary runs. Copies that do not
/// exist are left out. Secret data is hashed and dropped.
pub async fn primary_checksums(
    client: &Client,
    namespace: &str,
    keys: impl IntoIterator<Item = &String>,
) -> Result<BTreeMap<String, String>, Error> {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut out = BTreeMap::new();
    for key in keys {
        let Some((kind, name)) = key.split_once('/') else {
            continue;
        };
        let copy = primary_name(name);
        let get_error = |kind, source| Error::Get {
            kind,
            name: copy.clone(),
            source,
        };
        let checksum = match kind {
            "configmap" => config_maps
                .get_opt(&copy)
                .await
                .map_err(|e| get_error("ConfigMap", e))?
                .map(|c| config_map_checksum(c.data.as_ref())),
            "secret" => secrets
                .get_opt(&copy)
                .await
                .map_err(|e| get_error("Secret", e))?
                .map(|s| secret_checksum(s.data.as_ref())),
            _ => None,
        };
        if let Some(checksum) = checksum {
            out.insert(key.clone(), checksum);
        }
    }
    Ok(out)
}

/// Writes the `-primary` copies of ConfigMaps with `data` (by the original's name), owned by
/// the Canary: rebuild recovery gives the primary the config the Git ledger says was promoted.
pub async fn restore_primary_config_maps(
    client: &Client,
    canary: &Canary,
    data: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<(), Error> {
    let namespace = super::namespace_of(canary);
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    for (name, data) in data {
        let copy_name = primary_name(name);
        let copy = ConfigMap {
            metadata: ObjectMeta {
                name: Some(copy_name.clone()),
                namespace: Some(namespace.clone()),
                owner_references: Some(vec![objects::owner_ref(canary)]),
                ..Default::default()
            },
            data: Some(data.clone()),
            ..Default::default()
        };
        objects::apply(&api, &copy_name, &copy)
            .await
            .map_err(|source| Error::Write {
                kind: "ConfigMap",
                name: copy_name.clone(),
                source,
            })?;
    }
    Ok(())
}

/// The references that have `-primary` copies.
pub fn refs(configs: &BTreeMap<ConfigRef, ConfigObject>) -> BTreeSet<ConfigRef> {
    configs.keys().cloned().collect()
}

/// Creates or updates the `-primary` copy of every tracked config, owned by the Canary, and
/// returns the configs copied (the references the primary's pod template renames).
pub async fn write_primaries(
    client: &Client,
    canary: &Canary,
    configs: &BTreeMap<ConfigRef, ConfigObject>,
    include_prefixes: &[String],
) -> Result<BTreeSet<ConfigRef>, Error> {
    let namespace = &super::namespace_of(canary);
    let meta = |source: &ObjectMeta, name: &str| ObjectMeta {
        name: Some(primary_name(name)),
        namespace: Some(namespace.to_string()),
        labels: Some(filter_metadata(source.labels.as_ref(), include_prefixes)),
        owner_references: Some(vec![objects::owner_ref(canary)]),
        ..Default::default()
    };
    for (config, object) in configs {
        let name = primary_name(&config.name);
        let write_error = |source| Error::Write {
            kind: config.kind.kind(),
            name: name.clone(),
            source,
        };
        match object {
            ConfigObject::ConfigMap(source) => {
                let copy = ConfigMap {
                    metadata: meta(&source.metadata, &config.name),
                    data: source.data.clone(),
                    binary_data: source.binary_data.clone(),
                    immutable: None,
                };
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
                objects::apply(&api, &name, &copy).await.map_err(write_error)?;
            }
            ConfigObject::Secret(source) => {
                let copy = Secret {
                    metadata: meta(&source.metadata, &config.name),
                    data: source.data.clone(),
                    type_: source.type_.clone(),
                    ..Default::default()
                };
                let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
                // The type of a Secret cannot change, and flaggit may not delete Secrets.
                let existing = api.get_opt(&name).await.map_err(|source| Error::Get {
                    kind: "Secret",
                    name: name.clone(),
                    source,
                })?;
                if let Some(existing) = existing
                    && existing.type_ != copy.type_
                {
                    return Err(Error::Invalid(format!(
                        "Secret {namespace}/{name} has type {} but {} is now of type {}: delete {name} so \
                         flaggit can recreate it",
                        existing.type_.as_deref().unwrap_or("Opaque"),
                        config.name,
                        copy.type_.as_deref().unwrap_or("Opaque"),
                    )));
                }
                objects::apply(&api, &name, &copy).await.map_err(write_error)?;
            }
        }
    }
    Ok(refs(configs))
}
