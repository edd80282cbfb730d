//! Refusing writes outside leadership: a tower layer on the operator's API client that
//! lets reads through and fails every other request unless the leadership is valid at
//! the moment the request leaves. A leader that was paused (SIGSTOP, a long GC, a
//! starved node) and resumes after its renew deadline writes nothing, even if a
//! reconcile was half-way through.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use http::{Method, Request};
use tokio::time::Instant;
use tower::{Layer, Service};

/// Until when this process may write; None: not (or no longer) the leader.
#[derive(Clone, Default)]
pub struct Leadership(Arc<Mutex<Option<Instant>>>);

impl Leadership {
    /// A leadership valid until `until` (the renew deadline of the last renewal).
    pub fn extend(&self, until: Instant) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
    }

    /// No more writes, whatever the deadline said.
    pub fn revoke(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub fn valid(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|until| Instant::now() < until)
    }

    /// The layer for the API client.
    pub fn guard(&self) -> GuardLayer {
        GuardLayer(self.clone())
    }
}

/// Why a write was refused, as the client's error.
#[derive(Debug, thiserror::Error)]
#[error("not the leader (renew deadline passed): {method} {path} refused")]
pub struct NotLeader {
    method: Method,
    path: String,
}

/// A request that changes nothing, let through outside leadership.
pub fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

#[derive(Clone)]
pub struct GuardLayer(Leadership);

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            leadership: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    leadership: Leadership,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> Service<Request<B>> for Guard<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let read = is_read(req.method());
        if !read && !self.leadership.valid() {
            let refused = NotLeader {
                method: req.method().clone(),
                path: req.uri().path().to_string(),
            };
            return Box::pin(async move { Err(refused.into()) });
        }
        // Checked again at every poll: a write handed over just before the process was
        // stopped is dropped on resume (the client skips a request given up before it
        // leaves) rather than sent after the deadline.
        let leadership = self.leadership.clone();
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        let mut response = Box::pin(self.inner.call(req));
        Box::pin(std::future::poll_fn(move |cx| {
            if !read && !leadership.valid() {
                let refused = NotLeader {
                    method: method.clone(),
                    path: path.clone(),
                };
                return Poll::Ready(Err(refused.into()));
            }
            response.as_mut().poll(cx).map_err(Into::into)
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn writes_pass_only_while_leadership_is_valid() {
        let leadership = Leadership::default();
        let ok = tower::service_fn(|_: Request<()>| async { Ok::<_, BoxError>("sent") });
        let mut svc = leadership.guard().layer(ok);
        let req = |m: Method| Request::builder().method(m).uri("/api").body(()).unwrap();
        assert!(
            svc.call(req(Method::GET)).await.is_ok(),
            "reads always pass"
        );
        assert!(
            svc.call(req(Method::PATCH)).await.is_err(),
            "not yet leader"
        );
        leadership.extend(Instant::now() + Duration::from_secs(60));
        assert!(svc.call(req(Method::PATCH)).await.is_ok());
        assert!(svc.call(req(Method::POST)).await.is_ok());
        leadership.extend(Instant::now() - Duration::from_millis(1));
        let refused = svc.call(req(Method::PUT)).await.unwrap_err();
        assert!(
            refused.to_string().contains("PUT /api refused"),
            "{refused}"
        );
        leadership.extend(Instant::now() + Duration::from_secs(60));
        leadership.revoke();
        assert!(svc.call(req(Method::DELETE)).await.is_err());
    }
}
