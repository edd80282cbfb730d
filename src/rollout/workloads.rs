//! The managed Deployments, built from the target (pure).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::PodTemplateSpec},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};

pub use crate::api::Role;
use crate::api::{LABEL_ROLE, LABEL_ROLLOUT};

/// Annotation on managed Deployments: the revision their template is.
pub const ANNOTATION_REVISION: &str = "guardrails.dev/revision";

/// Revision of a pod template: a stable hash of its JSON (FNV-1a, 8 hex digits).
pub fn revision(template: &PodTemplateSpec) -> String {
    let text = serde_json::to_string(template).unwrap_or_default();
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{:08x}", (h >> 32) as u32 ^ h as u32)
}

/// A managed Deployment: the target's whole spec (strategy, minReadySeconds,
/// progressDeadlineSeconds, selector expressions...) with `template` and `replicas`, plus
/// the role and rollout labels (also in the selector), owned by the GuardedRollout.
pub fn managed(
    role: Role,
    target: &Deployment,
    rollout: &str,
    owner: OwnerReference,
    template: &PodTemplateSpec,
    revision: &str,
    replicas: i32,
) -> Deployment {
    let target_name = target.metadata.name.clone().unwrap_or_default();
    let ours = BTreeMap::from([
        (LABEL_ROLE.to_string(), role.as_str().to_string()),
        (LABEL_ROLLOUT.to_string(), rollout.to_string()),
    ]);
    let mut spec = target.spec.clone().unwrap_or_default();
    spec.replicas = Some(replicas);
    spec.paused = None;
    let selector = spec
        .selector
        .match_labels
        .get_or_insert_with(Default::default);
    selector.insert(LABEL_ROLE.into(), role.as_str().into());
    let mut template = template.clone();
    let meta = template.metadata.get_or_insert_with(Default::default);
    let labels = meta.labels.get_or_insert_with(Default::default);
    labels.extend(ours.clone());
    spec.template = template;
    let mut deployment_labels = target.metadata.labels.clone().unwrap_or_default();
    deployment_labels.extend(ours);
    Deployment {
        metadata: ObjectMeta {
            name: Some(role.name(&target_name)),
            namespace: target.metadata.namespace.clone(),
            labels: Some(deployment_labels),
            annotations: Some(BTreeMap::from([(
                ANNOTATION_REVISION.to_string(),
                revision.to_string(),
            )])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// A managed Deployment's template as the user wrote it: without our labels, so that it
/// can be given to the other role.
pub fn user_template(d: &Deployment) -> Option<PodTemplateSpec> {
    let mut t = d.spec.as_ref()?.template.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(LABEL_ROLE);
        labels.remove(LABEL_ROLLOUT);
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "share-link", "namespace": "portal", "labels": {"team": "links"}},
            "spec": {
                "replicas": 4,
                "selector": {"matchLabels": {"app": "share-link"}},
                "template": {"metadata": {"labels": {"app": "share-link"}}, "spec": {"containers": [{"name": "app", "image": "share-link:1"}]}}
            }
        }))
        .unwrap()
    }

    #[test]
    fn managed_deployment_carries_role_in_labels_and_selector() {
        let t = target();
        let template = t.spec.as_ref().unwrap().template.clone();
        let d = managed(
            Role::Canary,
            &t,
            "share-link",
            OwnerReference::default(),
            &template,
            "abc",
            1,
        );
        assert_eq!(d.metadata.name.as_deref(), Some("share-link-canary"));
        let spec = d.spec.as_ref().unwrap();
        let sel = spec.selector.match_labels.as_ref().unwrap();
        assert_eq!(sel.get("app").map(String::as_str), Some("share-link"));
        assert_eq!(sel.get(LABEL_ROLE).map(String::as_str), Some("canary"));
        let labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert_eq!(
            labels.get(LABEL_ROLLOUT).map(String::as_str),
            Some("share-link")
        );
        assert_eq!(
            labels.get("app").map(String::as_str),
            Some("share-link"),
            "the user's Service still selects it"
        );
        assert_eq!(
            d.metadata.annotations.as_ref().unwrap()[ANNOTATION_REVISION],
            "abc"
        );
        // Back to the user's template: same revision as the target.
        assert_eq!(revision(&user_template(&d).unwrap()), revision(&template));
    }

    #[test]
    fn managed_deployment_copies_the_targets_whole_spec() {
        let mut t = target();
        let spec = t.spec.as_mut().unwrap();
        spec.min_ready_seconds = Some(5);
        spec.progress_deadline_seconds = Some(120);
        spec.revision_history_limit = Some(3);
        spec.strategy = serde_json::from_value(serde_json::json!(
            {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
        ))
        .unwrap();
        spec.selector.match_expressions = serde_json::from_value(serde_json::json!(
            [{"key": "tier", "operator": "In", "values": ["web"]}]
        ))
        .unwrap();
        let template = spec.template.clone();
        let d = managed(
            Role::Primary,
            &t,
            "r",
            OwnerReference::default(),
            &template,
            "x",
            7,
        );
        let got = d.spec.unwrap();
        let want = t.spec.unwrap();
        assert_eq!(got.replicas, Some(7));
        assert_eq!(got.min_ready_seconds, want.min_ready_seconds);
        assert_eq!(
            got.progress_deadline_seconds,
            want.progress_deadline_seconds
        );
        assert_eq!(got.revision_history_limit, want.revision_history_limit);
        assert_eq!(got.strategy, want.strategy);
        assert_eq!(
            got.selector.match_expressions,
            want.selector.match_expressions
        );
    }

    #[test]
    fn revision_changes_with_the_template_only() {
        let mut t = target();
        let a = revision(&t.spec.as_ref().unwrap().template);
        t.spec.as_mut().unwrap().replicas = Some(0);
        assert_eq!(revision(&t.spec.as_ref().unwrap().template), a);
        t.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .image = Some("share-link:2".into());
        assert_ne!(revision(&t.spec.as_ref().unwrap().template), a);
        assert_eq!(a.len(), 8);
    }
}
