//! A pod template carried in status as its JSON. The status keeps the stable revision's
//! template so the primary can be rebuilt from it; every cached rollout carries it, and
//! decoded into k8s-openapi's structs it takes several KiB where its JSON takes a few
//! hundred bytes. It is decoded only to rebuild a primary.

use std::fmt;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A `PodTemplateSpec`, held as the JSON its serializer writes (so two equal templates
/// hold equal text).
#[derive(Clone, PartialEq, Eq)]
pub struct PodTemplate(Box<str>);

impl PodTemplate {
    pub fn new(template: &PodTemplateSpec) -> Self {
        // Serializing a k8s-openapi type cannot fail (string keys only).
        PodTemplate(serde_json::to_string(template).unwrap_or_default().into())
    }

    /// The template, decoded; None if its text does not decode (it always does: it was
    /// written from a decoded template).
    pub fn get(&self) -> Option<PodTemplateSpec> {
        serde_json::from_str(&self.0).ok()
    }
}

impl Default for PodTemplate {
    fn default() -> Self {
        PodTemplate::new(&PodTemplateSpec::default())
    }
}

impl From<PodTemplateSpec> for PodTemplate {
    fn from(template: PodTemplateSpec) -> Self {
        PodTemplate::new(&template)
    }
}

impl fmt::Debug for PodTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for PodTemplate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let template = self
            .get()
            .ok_or_else(|| serde::ser::Error::custom("a pod template that does not decode"))?;
        template.serialize(s)
    }
}

impl<'de> Deserialize<'de> for PodTemplate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        PodTemplateSpec::deserialize(d).map(PodTemplate::from)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn round_trips_through_its_json_and_compares_by_content() {
        let written = json!({"metadata": {"labels": {"b": "2", "a": "1"}},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]}});
        let held: PodTemplate = serde_json::from_value(written.clone()).unwrap();
        assert_eq!(serde_json::to_value(&held).unwrap(), written);
        let spec: PodTemplateSpec = serde_json::from_value(written).unwrap();
        assert_eq!(held.get(), Some(spec.clone()));
        assert_eq!(held, PodTemplate::new(&spec), "same template, same text");
        assert_eq!(
            PodTemplate::default().get(),
            Some(PodTemplateSpec::default())
        );
    }

    #[test]
    fn what_is_not_a_pod_template_is_refused() {
        let wrong = json!({"spec": {"containers": "app"}});
        assert!(serde_json::from_value::<PodTemplate>(wrong).is_err());
    }
}
