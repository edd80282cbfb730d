//! Refusing writes at the socket. The [`guard`](super::guard) layer checks the leadership
//! when a request is handed over and at every poll of its future, but the bytes are
//! written by the HTTP connection's own task: after a pause (SIGSTOP, a starved node),
//! that task may run before the request's future is polled again and send a request that
//! was queued before the pause. The operator's writes therefore travel on connections of
//! their own whose every write to the socket checks the leadership first: once the renew
//! deadline has passed, nothing more is handed to the socket, whichever task runs first.
//! (Bytes the kernel accepted before the deadline may still leave after it; and a pause
//! that falls between the check and the write call itself resumes into that call.)

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use tower::Service;

use super::Leadership;

/// A connector whose connections write only while the leadership is valid.
#[derive(Clone)]
pub struct GuardedConnector<C> {
    inner: C,
    leadership: Leadership,
}

impl<C> GuardedConnector<C> {
    pub fn new(inner: C, leadership: Leadership) -> Self {
        GuardedConnector { inner, leadership }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<C> Service<Uri> for GuardedConnector<C>
where
    C: Service<Uri>,
    C::Future: Send + 'static,
{
    type Response = GuardedIo<C::Response>;
    type Error = C::Error;
    type Future = BoxFuture<Result<Self::Response, C::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), C::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let leadership = self.leadership.clone();
        let connecting = self.inner.call(uri);
        Box::pin(async move {
            let io = connecting.await?;
            Ok(GuardedIo { io, leadership })
        })
    }
}

/// A connection that refuses to write once the leadership is gone. Reads (the answers
/// to requests already sent) and shutdown go through.
pub struct GuardedIo<T> {
    io: T,
    leadership: Leadership,
}

impl<T> GuardedIo<T> {
    fn refused(&self) -> Option<io::Error> {
        (!self.leadership.valid()).then(|| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                "not the leader (renew deadline passed): write refused",
            )
        })
    }
}

impl<T: Write + Unpin> Write for GuardedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(refused) = self.refused() {
            return Poll::Ready(Err(refused));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(refused) = self.refused() {
            return Poll::Ready(Err(refused));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(refused) = self.refused() {
            return Poll::Ready(Err(refused));
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<T: Read + Unpin> Read for GuardedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: Connection> Connection for GuardedIo<T> {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hyper_util::{client::legacy::connect::HttpConnector, rt::TokioIo};
    use tokio::{
        io::AsyncReadExt,
        net::TcpListener,
        time::{Instant, timeout},
    };

    use super::*;

    async fn write(
        io: &mut GuardedIo<TokioIo<tokio::net::TcpStream>>,
        bytes: &[u8],
    ) -> io::Result<()> {
        std::future::poll_fn(|cx| Pin::new(&mut *io).poll_write(cx, bytes)).await?;
        std::future::poll_fn(|cx| Pin::new(&mut *io).poll_flush(cx)).await
    }

    #[tokio::test]
    async fn no_byte_leaves_after_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri: Uri = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let leadership = Leadership::default();
        leadership.extend(Instant::now() + Duration::from_millis(200));
        let mut connector = GuardedConnector::new(HttpConnector::new(), leadership.clone());
        let mut io = connector.call(uri).await.unwrap();
        let (mut peer, _) = listener.accept().await.unwrap();

        write(&mut io, b"before").await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let refused = write(&mut io, b"after").await.unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::PermissionDenied);
        drop(io);

        let mut received = Vec::new();
        timeout(Duration::from_secs(5), peer.read_to_end(&mut received))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            received, b"before",
            "only the bytes written while leading arrive"
        );
    }
}
