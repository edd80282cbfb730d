//! Waiting in tests: poll until a probe answers, or fail loudly saying what was awaited
//! and the last thing seen. No wait times out quietly.

use std::{fmt::Debug, future::Future, time::Duration};

/// How often [`eventually`] probes.
pub const POLL: Duration = Duration::from_millis(250);

/// Probes every [`POLL`] until `probe` returns Ok (its value is returned); after
/// `timeout`, panics with `what` and the last Err the probe returned.
pub async fn eventually<T, Seen, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    Seen: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Seen>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let seen = match probe().await {
            Ok(v) => return v,
            Err(seen) => seen,
        };
        if tokio::time::Instant::now() >= deadline {
            panic!("{what}: not within {timeout:?}; last seen: {seen:#?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `Ok(())` when `ok`, else `Err(seen)`: a probe for [`eventually`] from a condition.
pub fn reached<S>(ok: bool, seen: S) -> Result<(), S> {
    if ok { Ok(()) } else { Err(seen) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_reached() {
        let mut n = 0;
        let v = eventually("n reaches 3", Duration::from_secs(5), || {
            n += 1;
            let n = n;
            async move { if n >= 3 { Ok(n * 10) } else { Err(n) } }
        })
        .await;
        assert_eq!(v, 30);
    }

    #[tokio::test]
    #[should_panic(expected = "the answer: not within 300ms; last seen: 41")]
    async fn fails_naming_what_and_the_last_value() {
        eventually("the answer", Duration::from_millis(300), || async {
            Err::<(), _>(41)
        })
        .await;
    }
}
