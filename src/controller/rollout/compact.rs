//! Cached objects held as their JSON. A Deployment decoded into k8s-openapi's structs
//! takes about 8 KiB of heap, most of it the empty optional fields of its pod and
//! container specs and a B-tree node per label or annotation map; its JSON takes a
//! fraction of that. The operator caches three Deployments per service (the target,
//! the primary and the canary) and decodes them only in a reconcile that reads them,
//! never while a rollout is idle.

use std::{borrow::Cow, fmt, marker::PhantomData};

use kube::{Resource, api::ObjectMeta};
use serde::{Deserialize, Deserializer, Serialize, de::DeserializeOwned};

/// `K` as JSON, beside the metadata a watch store and a controller look up (name,
/// namespace, uid, resourceVersion, generation, owners, deletion).
pub struct Compact<K> {
    metadata: ObjectMeta,
    json: Box<str>,
    kind: PhantomData<fn() -> K>,
}

impl<K: Resource + Serialize> Compact<K> {
    pub fn new(obj: &K) -> Self {
        let m = obj.meta();
        let metadata = ObjectMeta {
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            uid: m.uid.clone(),
            resource_version: m.resource_version.clone(),
            generation: m.generation,
            owner_references: m.owner_references.clone(),
            deletion_timestamp: m.deletion_timestamp.clone(),
            ..Default::default()
        };
        // Serializing a k8s-openapi or derived type cannot fail (string keys only).
        let json = serde_json::to_string(obj).unwrap_or_default();
        Compact {
            metadata,
            json: json.into_boxed_str(),
            kind: PhantomData,
        }
    }
}

impl<K: DeserializeOwned> Compact<K> {
    /// The object, decoded.
    pub fn get(&self) -> Result<K, serde_json::Error> {
        serde_json::from_str(&self.json)
    }
}

impl<K> Clone for Compact<K> {
    fn clone(&self) -> Self {
        Compact {
            metadata: self.metadata.clone(),
            json: self.json.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> fmt::Debug for Compact<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compact")
            .field("name", &self.metadata.name)
            .field("namespace", &self.metadata.namespace)
            .field("bytes", &self.json.len())
            .finish()
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Compact<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Decoded as `K` (so a watch checks the object as usual), trimmed as every cached
/// object is ([`super::trim`]), then kept as JSON.
impl<'de, K> Deserialize<'de> for Compact<K>
where
    K: Resource + Serialize + DeserializeOwned,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut obj = K::deserialize(d)?;
        super::trim(&mut obj);
        Ok(Compact::new(&obj))
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use serde_json::json;

    use super::*;

    fn deployment() -> serde_json::Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "app-primary", "namespace": "ns", "uid": "u1",
                "resourceVersion": "7", "generation": 3,
                "labels": {"app": "app", "guardrails.dev/role": "primary"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                "managedFields": [{"manager": "guardrails", "operation": "Apply"}],
                "ownerReferences": [{"apiVersion": "guardrails.dev/v1alpha1",
                    "kind": "GuardedRollout", "name": "app", "uid": "r1", "controller": true}]},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "app"}},
                "template": {"metadata": {"labels": {"app": "app"}},
                    "spec": {"containers": [{"name": "app", "image": "app:1",
                        "resources": {"requests": {"cpu": "100m"}}}]}}},
            "status": {"replicas": 2, "readyReplicas": 1, "observedGeneration": 3}
        })
    }

    #[test]
    fn decodes_to_the_trimmed_object_and_keeps_what_stores_look_up() {
        let compact: Compact<Deployment> = serde_json::from_value(deployment()).unwrap();
        let mut expected: Deployment = serde_json::from_value(deployment()).unwrap();
        super::super::trim(&mut expected);
        assert_eq!(compact.get().unwrap(), expected);

        let meta = compact.meta();
        assert_eq!(meta.name.as_deref(), Some("app-primary"));
        assert_eq!(meta.resource_version.as_deref(), Some("7"));
        assert_eq!(meta.generation, Some(3));
        assert_eq!(meta.owner_references.as_ref().map(Vec::len), Some(1));
        assert_eq!(Compact::<Deployment>::kind(&()), "Deployment");
        assert_eq!(Compact::<Deployment>::plural(&()), "deployments");
    }

    #[test]
    fn a_watch_event_that_is_not_the_kind_fails_to_decode() {
        let mut wrong = deployment();
        wrong["spec"]["replicas"] = json!("two");
        assert!(serde_json::from_value::<Compact<Deployment>>(wrong).is_err());
    }
}
