//! Kubernetes Events with stable reasons.

use kube::{
    Resource,
    runtime::events::{Event, EventType, Recorder},
};

use super::Context;
use crate::reasons::{RolloutEvent, SloEvent};

/// An Event reason of one of the vocabularies, which knows whether it is a Warning.
pub trait Reason: Copy {
    fn as_str(self) -> &'static str;
    fn is_warning(self) -> bool;
}

impl Reason for RolloutEvent {
    fn as_str(self) -> &'static str {
        RolloutEvent::as_str(self)
    }
    fn is_warning(self) -> bool {
        RolloutEvent::is_warning(self)
    }
}

impl Reason for SloEvent {
    fn as_str(self) -> &'static str {
        SloEvent::as_str(self)
    }
    fn is_warning(self) -> bool {
        SloEvent::is_warning(self)
    }
}

/// Publishes an Event on `obj`; failures are logged, never fatal.
pub async fn publish<K>(ctx: &Context, obj: &K, reason: impl Reason, note: String)
where
    K: Resource<DynamicType = ()>,
{
    let (warning, reason) = (reason.is_warning(), reason.as_str());
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.to_string(),
        note: Some(truncate(note, 1000)),
        action: reason.to_string(),
        secondary: None,
    };
    match recorder.publish(&event, &obj.object_ref(&())).await {
        Ok(()) => ctx.metrics.wrote("event"),
        Err(e) => tracing::warn!(error = %e, reason, "publishing event failed"),
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}
