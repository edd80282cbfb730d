//! API errors as one line a person can act on.

/// What a request was about, for the message.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// e.g. "GuardedRollout"
    pub kind: &'a str,
    pub name: Option<&'a str>,
    pub namespace: Option<&'a str>,
}

/// One line, no trailing newline.
pub fn explain(err: &kube::Error, what: Subject<'_>) -> String {
    let place = what
        .namespace
        .map_or(String::new(), |ns| format!(" in namespace \"{ns}\""));
    let line = match err {
        kube::Error::Api(s)
            if s.code == 404 && s.message.contains("could not find the requested resource") =>
        {
            format!(
                "the {} resource is not installed in this cluster (install the CRDs: guardrails crd | kubectl apply -f -)",
                what.kind
            )
        }
        kube::Error::Api(s) if s.code == 404 => match what.name {
            Some(name) => format!("{} \"{name}\" not found{place}", what.kind),
            None => format!("not found: {}", s.message),
        },
        kube::Error::Api(s) if s.code == 403 => format!("forbidden: {}", s.message),
        kube::Error::Api(s) if s.code == 401 => {
            "unauthorized: the kubeconfig's credentials were refused".to_string()
        }
        kube::Error::Api(s) => format!("{} ({}): {}", s.reason, s.code, s.message),
        kube::Error::HyperError(e) => format!("cannot reach the API server: {e}"),
        kube::Error::Service(e) => format!("cannot reach the API server: {e}"),
        other => other.to_string(),
    };
    one_line(&line)
}

/// Collapses whitespace runs (including newlines) to single spaces.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
