//! The REST API's connections: accepted here, not by a framework's server, so that every one
//! is bounded. A client gets a fixed time to send its request head and its body, the number of
//! connections is capped, and a TLS handshake has a deadline; none of them can hold a file
//! descriptor or a task for longer (slowloris, a body that never completes, a
//! `Content-Length` lie). Requests carry the peer's address for the loopback-only rules.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower_service::Service;

/// Bounds on what one client may hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// From the first byte of a request (or from an idle keep-alive) to the end of its head.
    pub header_read: Duration,
    /// From the end of the head to the end of the body (answered 408 past it).
    pub body_read: Duration,
    /// The TLS handshake.
    pub handshake: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 128,
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(10),
            handshake: Duration::from_secs(10),
        }
    }
}

/// Serves `app` on `listener` until the task is aborted.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; connections in hand go on.
                tracing::warn!("REST API accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse_busy(stream, tls.is_some()));
            continue;
        };
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => serve_connection(TokioIo::new(stream), app, peer, limits).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.handshake, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => serve_connection(TokioIo::new(s), app, peer, limits).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_connection<I>(io: I, app: Router, peer: SocketAddr, limits: Limits)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().call(req)
        });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    if let Err(e) = builder.serve_connection(io, service).await {
        tracing::debug!(%peer, "REST API connection ended: {e}");
    }
}

/// Over the connection cap: a plain-text 503 (no TLS handshake is spent on it) and close.
async fn refuse_busy(mut stream: TcpStream, tls: bool) {
    if !tls {
        let body = r#"{"status":"busy","reason":"too many connections; try again"}"#;
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ =
            tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
    }
    let _ = stream.shutdown().await;
}
