//! The operator's vocabulary: every phase, outcome, condition type and reason it writes,
//! one enum each, declared with [`vocabulary!`] so the wire name, `ALL`, `as_str`,
//! Display and FromStr come from one list. Status, Events, metrics labels, the docs test
//! and the plugin all read these.

pub mod rollout;
pub mod slo;

pub use rollout::{NotifyCondition, RolloutCondition, RolloutEvent};
pub use slo::{RuleCondition, SloCondition, SloEvent};

/// Declares an enum whose variants are its wire names (or `as "name"` where the API
/// spells them otherwise), with `ALL`, `as_str`, Display and FromStr. Derives are the
/// caller's, so API enums keep their serde and schema attributes.
#[macro_export]
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident $(as $wire:literal)? ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $crate::vocabulary!(@wire $variant $($wire)?) ),+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| format!("not a {}: {s}", stringify!($name)))
            }
        }
    };
    (@wire $variant:ident $wire:literal) => { $wire };
    (@wire $variant:ident) => { stringify!($variant) };
}

vocabulary! {
    /// Condition types (kstatus style, plus the operator's own).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum ConditionType {
        /// The object is fully reconciled and its status can be trusted.
        Ready,
        /// The operator is working towards the spec (kstatus).
        Reconciling,
        /// The operator cannot make progress without a change from a person (kstatus).
        Stalled,
        /// Another writer keeps scaling a GuardedRollout's target up.
        TargetConflict,
        /// Whether a GuardedRollout's router carries the weights decided (present once a
        /// route write has failed).
        TrafficRouted,
        /// Whether a SloPolicy's PrometheusRule is in place (present while
        /// `spec.alerting.prometheusRule.enabled`).
        PrometheusRuleReady,
        /// Whether a GuardedRollout's webhook can be told (present with
        /// `spec.notifications`, once its Secret was read).
        NotificationsReady,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ChangeClass, Gate, Outcome, Phase, Severity};

    /// The wire name of every value is its serde name, and parses back.
    fn serde_agrees<T>(all: &[T], as_str: fn(&T) -> &'static str)
    where
        T: serde::Serialize + std::str::FromStr + PartialEq + std::fmt::Debug,
    {
        for v in all {
            assert_eq!(serde_json::to_value(v).unwrap(), as_str(v), "{v:?}");
            assert_eq!(as_str(v).parse::<T>().ok().as_ref(), Some(v));
        }
    }

    #[test]
    fn api_enums_speak_their_serde_names() {
        serde_agrees(Phase::ALL, |v| v.as_str());
        serde_agrees(Outcome::ALL, |v| v.as_str());
        serde_agrees(Gate::ALL, |v| v.as_str());
        serde_agrees(Severity::ALL, |v| v.as_str());
        serde_agrees(ChangeClass::ALL, |v| v.as_str());
        serde_agrees(crate::api::NotificationFormat::ALL, |v| v.as_str());
        serde_agrees(NotifyCondition::ALL, |v| v.as_str());
        assert_eq!(Severity::Page.to_string(), "page");
        assert_eq!(ChangeClass::Corrective.to_string(), "corrective");
    }

    #[test]
    fn names_are_unique_within_a_vocabulary() {
        fn unique(names: Vec<&str>) {
            let mut sorted = names.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), names.len(), "{names:?}");
        }
        unique(RolloutEvent::ALL.iter().map(|r| r.as_str()).collect());
        unique(RolloutCondition::ALL.iter().map(|r| r.as_str()).collect());
        unique(SloEvent::ALL.iter().map(|r| r.as_str()).collect());
        unique(SloCondition::ALL.iter().map(|r| r.as_str()).collect());
        unique(RuleCondition::ALL.iter().map(|r| r.as_str()).collect());
        unique(NotifyCondition::ALL.iter().map(|r| r.as_str()).collect());
        unique(ConditionType::ALL.iter().map(|r| r.as_str()).collect());
        assert_eq!(
            "Stalled".parse::<ConditionType>(),
            Ok(ConditionType::Stalled)
        );
        assert!("stalled".parse::<ConditionType>().is_err());
    }
}
