//! The REST API: worker events in (`POST /citus`, `POST /mpp`, exactly what a Patroni worker
//! sends), policy hot swaps (`POST /policy/reload`), and what an operator wants to see
//! (`GET /policy`, `GET /status`, `GET /metrics`).
//!
//! Answers follow the reference where workers depend on them (200 for every well-formed
//! event, `before_demote` held until the pause is in place or its timeout passed) and say in a
//! JSON body what happened, because an operator debugging a switchover reads them with curl.
//! When `restapi.authentication` is set, every POST needs it (Patroni protects its unsafe
//! methods the same way); GETs stay open for monitoring.

use super::inbox::{Completion, EventAnswer, Input};
use super::reload::Reloader;
use super::report::Board;
use super::Settings;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Largest worker event body accepted (a real one is about 100 bytes).
pub const EVENT_BODY_LIMIT: usize = 64 * 1024;
/// Largest policy component accepted by `POST /policy/reload` (a build is under 2 MB).
pub const POLICY_BODY_LIMIT: usize = 16 * 1024 * 1024;
/// How long a non-`before_demote` event may wait for the owner to take it.
const EVENT_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// `timeout` of a before_demote whose body does not say (the policy refuses such a body anyway).
const DEFAULT_EVENT_TIMEOUT_S: f64 = 30.0;

#[derive(Clone)]
struct AppState {
    tx: mpsc::Sender<Input>,
    reloader: Arc<Reloader>,
    board: Arc<Board>,
    /// sha256 of "user:password": compared without revealing where a guess went wrong.
    auth: Option<[u8; 32]>,
    /// Held while a reload reads and compiles its candidate: one at a time, so concurrent
    /// uploads cannot multiply the memory a component takes.
    reloading: Arc<tokio::sync::Mutex<()>>,
    /// The longest pause an event may ask for (`max_pause`).
    max_pause: Duration,
    /// How long a request body may take to arrive.
    body_read: Duration,
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// The router; public so tests and other front ends can mount it.
pub(crate) fn router(
    tx: mpsc::Sender<Input>,
    reloader: Arc<Reloader>,
    board: Arc<Board>,
    auth: Option<&(String, String)>,
    max_pause: Duration,
    body_read: Duration,
) -> Router {
    let state = AppState {
        tx,
        reloader,
        board,
        auth: auth.map(|(u, p)| digest(&format!("{u}:{p}"))),
        reloading: Arc::new(tokio::sync::Mutex::new(())),
        max_pause,
        body_read,
    };
    Router::new()
        .route("/citus", post(event))
        .route("/mpp", post(event))
        .route("/policy", get(policy))
        .route("/policy/reload", post(reload))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Bodies are read by `read_body`, with their own limits and deadline.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

async fn not_found(req: Request) -> Response {
    answer(
        StatusCode::NOT_FOUND,
        json!({"status": "not_found", "reason": format!("no endpoint {}", truncated(req.uri().path(), 200))}),
    )
}

async fn method_not_allowed(req: Request) -> Response {
    answer(
        StatusCode::METHOD_NOT_ALLOWED,
        json!({"status": "method_not_allowed",
               "reason": format!("{} is not served on {}", req.method(), truncated(req.uri().path(), 200))}),
    )
}

/// At most `max` characters of `text`, marked when cut: what answers and logs echo of input.
pub fn truncated(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((i, _)) => format!("{}... ({} bytes)", &text[..i], text.len()),
    }
}

fn too_large(limit: usize) -> Response {
    closing(answer(
        StatusCode::PAYLOAD_TOO_LARGE,
        json!({"status": "too_large", "reason": format!("the body may have at most {limit} bytes")}),
    ))
}

/// `r` with `Connection: close`: for an answer given before the body was read to its end.
/// The server then drops the connection, and a client that kept it for its next request
/// would find it gone ("error sending request"), so it must not keep it.
fn closing(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    r
}

/// The refusal of a request whose `Content-Length` is unreadable or already over `limit`,
/// given before anything waits on its body or takes a lock for it.
fn refuse_declared_length(req: &Request, limit: usize) -> Option<Response> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().parse::<u64>());
    match declared {
        Some(Ok(n)) if n > limit as u64 => Some(too_large(limit)),
        Some(Err(_)) => Some(closing(answer(
            StatusCode::BAD_REQUEST,
            json!({"status": "invalid", "field": "content-length", "reason": "not a number"}),
        ))),
        _ => None,
    }
}

/// Reads a request body within `limit` bytes and `within`: 413 at once when
/// `Content-Length` already says too much, then as [`receive_body`].
async fn read_body(req: Request, limit: usize, within: Duration) -> Result<Bytes, Response> {
    if let Some(refused) = refuse_declared_length(&req, limit) {
        return Err(refused);
    }
    receive_body(req, limit, within).await
}

/// Reads a body whose declared length was checked: 413 when it grows past `limit`, 408 when
/// it does not arrive within `within` (the connection is closed then).
async fn receive_body(req: Request, limit: usize, within: Duration) -> Result<Bytes, Response> {
    let body = req.into_body();
    match tokio::time::timeout(within, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => {
            let length_limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if length_limit {
                Err(too_large(limit))
            } else {
                Err(answer(
                    StatusCode::BAD_REQUEST,
                    json!({"status": "invalid", "field": "body", "reason": format!("the body could not be read: {e}")}),
                ))
            }
        }
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            [(header::CONNECTION, "close")],
            Json(json!({"status": "timeout", "reason": format!("the body did not arrive within {} s", within.as_secs_f64())})),
        )
            .into_response()),
    }
}

/// Binds the listener now (so a taken port fails the start) and serves in the background.
pub(crate) fn start(
    settings: &Settings,
    tx: mpsc::Sender<Input>,
    reloader: Arc<Reloader>,
    board: Arc<Board>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = std::net::TcpListener::bind(settings.listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.listen))?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let addr = listener.local_addr()?;
    let app = router(
        tx,
        reloader,
        board,
        settings.auth.as_ref(),
        settings.max_pause,
        settings.http_limits.body_read,
    );
    let tls = match &settings.tls {
        None => {
            tracing::info!("REST API on http://{addr}");
            None
        }
        Some((cert, key)) => {
            let mut cfg = tls_config(cert, key).map_err(|(_, e)| anyhow::anyhow!(e))?;
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            tracing::info!("REST API on https://{addr}");
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
        }
    };
    Ok(tokio::spawn(super::listener::serve(
        listener,
        app,
        tls,
        settings.http_limits,
    )))
}

/// The HTTPS server configuration from PEM files. Errors name the config field at fault.
pub fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, (&'static str, String)> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| {
            (
                "restapi.certfile",
                format!("cannot read {}: {e}", cert.display()),
            )
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            (
                "restapi.certfile",
                format!("{}: not a PEM certificate: {e}", cert.display()),
            )
        })?;
    if certs.is_empty() {
        return Err((
            "restapi.certfile",
            format!("{}: holds no certificate", cert.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        (
            "restapi.keyfile",
            format!("{}: no usable private key: {e}", key.display()),
        )
    })?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ("restapi.certfile", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            (
                "restapi.keyfile",
                format!("the key does not fit the certificate: {e}"),
            )
        })
}

/// Basic auth on every POST when configured.
async fn authenticate(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() == Method::POST {
        if let Some(expected) = &st.auth {
            if !authorized(req.headers(), expected) {
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Basic realm=\"citus-ha\"")],
                    Json(json!({"status": "unauthorized", "reason": "this endpoint needs the restapi credentials (basic auth)"})),
                )
                    .into_response();
            }
        }
    }
    next.run(req).await
}

fn authorized(headers: &HeaderMap, expected: &[u8; 32]) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    // The scheme is case-insensitive (RFC 9110 11.1).
    let Some((scheme, encoded)) = value.trim_start().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let got: [u8; 32] = Sha256::digest(&decoded).into();
    // Comparing digests: equal-length, and a mismatch says nothing about the password.
    got.iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

fn answer(code: StatusCode, body: Value) -> Response {
    (code, Json(body)).into_response()
}

/// `POST /citus` and `POST /mpp`.
async fn event(State(st): State<AppState>, req: Request) -> Response {
    let body = match read_body(req, EVENT_BODY_LIMIT, st.body_read).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut clamped = None;
    let Answer(code, mut v) = handle_event(&st, &body, &mut clamped).await;
    if let Some(asked) = clamped {
        v["timeout_clamped"] = json!({"asked_timeout_s": asked, "max_pause_s": st.max_pause.as_secs_f64(),
                                      "reason": "a pause may last at most max_pause"});
    }
    answer(code, v)
}

/// An event's answer before it becomes a response: its status and JSON body.
struct Answer(StatusCode, Value);

impl Answer {
    fn stopping() -> Self {
        Answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "error", "reason": "the service is stopping"}),
        )
    }
}

async fn handle_event(st: &AppState, body: &Bytes, clamped: &mut Option<f64>) -> Answer {
    let Ok(text) = std::str::from_utf8(body) else {
        return Answer(
            StatusCode::BAD_REQUEST,
            json!({"status": "invalid", "field": "event", "reason": "the body is not UTF-8"}),
        );
    };
    let mut value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Answer(
                StatusCode::BAD_REQUEST,
                json!({"status": "invalid", "field": "event", "reason": format!("not valid JSON: {e}")}),
            )
        }
    };
    let wait = value.get("type").and_then(Value::as_str) == Some("before_demote");
    // One pause may not hold the formation for longer than max_pause: a longer `timeout` is
    // clamped before the policy sees it, and the answer says so.
    let max_pause_s = st.max_pause.as_secs_f64();
    let clamped_from = value
        .get("timeout")
        .and_then(Value::as_f64)
        .filter(|t| t.is_finite() && *t > max_pause_s);
    *clamped = clamped_from;
    let forwarded = match clamped_from {
        None => text.to_string(),
        Some(asked) => {
            value["timeout"] = serde_json::Number::from_f64(max_pause_s)
                .map(Value::Number)
                .unwrap_or(Value::Null);
            tracing::warn!(
                asked_s = asked,
                max_pause_s,
                "a worker event asked for a longer pause than max_pause: clamped"
            );
            value.to_string()
        }
    };
    let timeout = if wait {
        let s = value
            .get("timeout")
            .and_then(Value::as_f64)
            .filter(|t| t.is_finite() && *t > 0.0)
            .unwrap_or(DEFAULT_EVENT_TIMEOUT_S)
            .min(max_pause_s);
        Duration::from_secs_f64(s)
    } else {
        EVENT_ANSWER_TIMEOUT
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let (reply, rx) = oneshot::channel();
    let sent = st.tx.send(Input::Event {
        body: forwarded,
        caller_deadline: wait.then_some(deadline),
        reply,
    });
    match tokio::time::timeout_at(deadline, sent).await {
        Err(_) => {
            return Answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "busy", "reason": "the agent did not take the event in time"}),
            )
        }
        Ok(Err(_)) => return Answer::stopping(),
        Ok(Ok(())) => {}
    }
    let timed_out = |ticket: Option<u64>| {
        Answer(
            StatusCode::OK,
            json!({"status": "timeout", "ticket": ticket,
                   "reason": format!("not done within {} s", timeout.as_secs_f64())}),
        )
    };
    let first = match tokio::time::timeout_at(deadline, rx).await {
        Err(_) => return timed_out(None),
        Ok(Err(_)) => return Answer::stopping(),
        Ok(Ok(a)) => a,
    };
    match first {
        EventAnswer::Invalid(e) => Answer(
            StatusCode::BAD_REQUEST,
            json!({"status": "invalid", "field": e.field, "reason": e.reason}),
        ),
        EventAnswer::Ignored(reason) => Answer(
            StatusCode::OK,
            json!({"status": "ignored", "reason": reason}),
        ),
        EventAnswer::Discarded(reason) => Answer(
            StatusCode::OK,
            json!({"status": "discarded", "reason": reason}),
        ),
        EventAnswer::Unchanged => Answer(StatusCode::OK, json!({"status": "unchanged"})),
        EventAnswer::Queued(ticket) => Answer(
            StatusCode::OK,
            json!({"status": "queued", "ticket": ticket}),
        ),
        EventAnswer::Error(reason) => Answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"status": "error", "reason": reason}),
        ),
        EventAnswer::Waiting(ticket, done) => match tokio::time::timeout_at(deadline, done).await {
            Err(_) => timed_out(Some(ticket)),
            Ok(Err(_)) => Answer(
                StatusCode::OK,
                json!({"status": "discarded", "ticket": ticket, "reason": "the service dropped the request"}),
            ),
            Ok(Ok(Completion::Paused)) => Answer(
                StatusCode::OK,
                json!({"status": "paused", "ticket": ticket}),
            ),
            Ok(Ok(Completion::Failed(reason))) => Answer(
                StatusCode::OK,
                json!({"status": "failed", "ticket": ticket, "reason": reason}),
            ),
            Ok(Ok(Completion::Discarded(reason))) => Answer(
                StatusCode::OK,
                json!({"status": "discarded", "ticket": ticket, "reason": reason}),
            ),
        },
    }
}

/// `GET /policy`.
async fn policy(State(st): State<AppState>) -> Response {
    let mut report = st.board.policy();
    report.refused_swaps = st
        .reloader
        .refused
        .load(std::sync::atomic::Ordering::Relaxed);
    answer(
        StatusCode::OK,
        serde_json::to_value(report).unwrap_or_default(),
    )
}

/// Whether `peer` may replace the policy: anyone who passed basic auth, else only loopback.
fn reload_allowed(peer: std::net::IpAddr, auth_configured: bool) -> bool {
    auth_configured || peer.is_loopback()
}

/// `POST /policy/reload`: empty body re-reads policy.path; otherwise the body is the .wasm.
/// Without `restapi.authentication` only loopback clients may reload; one reload at a time,
/// checked before the body is read (after its declared length).
async fn reload(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    if !reload_allowed(peer.ip(), st.auth.is_some()) {
        return answer(
            StatusCode::FORBIDDEN,
            json!({"status": "forbidden",
                   "reason": "policy reloads come only from loopback unless restapi.authentication is set"}),
        );
    }
    // An oversized upload is refused as such even while another reload runs: the size is
    // the client's mistake to fix, busy is only a reason to retry.
    if let Some(refused) = refuse_declared_length(&req, POLICY_BODY_LIMIT) {
        return refused;
    }
    let Ok(_one_at_a_time) = st.reloading.clone().try_lock_owned() else {
        return answer(
            StatusCode::CONFLICT,
            json!({"status": "busy", "reason": "another policy reload is in progress"}),
        );
    };
    let body = match receive_body(req, POLICY_BODY_LIMIT, st.body_read).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let bytes = (!body.is_empty()).then(|| body.to_vec());
    drop(body);
    match st.reloader.reload(bytes, "POST /policy/reload").await {
        Ok(report) => answer(
            StatusCode::OK,
            json!({"status": "swapped", "from": report.from, "to": report.to}),
        ),
        Err(reason) => answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"status": "refused", "reason": reason}),
        ),
    }
}

/// `GET /status`: JSON, from what the owner last published (never waits for it).
async fn status(State(st): State<AppState>) -> Response {
    answer(
        StatusCode::OK,
        serde_json::to_value(st.board.status()).unwrap_or_default(),
    )
}

/// `GET /metrics`: the same numbers in Prometheus' text format.
async fn metrics(State(st): State<AppState>) -> Response {
    let s = st.board.status();
    let mut out = String::new();
    let mut put = |name: &str, kind: &str, help: &str, value: u64| {
        out.push_str(&format!(
            "# HELP citus_ha_{name} {help}\n# TYPE citus_ha_{name} {kind}\ncitus_ha_{name} {value}\n"
        ));
    };
    put(
        "leader",
        "gauge",
        "1 while this node leads the coordinator group",
        u64::from(s.leader),
    );
    put(
        "dcs_stale",
        "gauge",
        "1 while the DCS view is older than ttl (this node then does not act as leader)",
        u64::from(s.dcs_stale),
    );
    put(
        "heartbeats_total",
        "counter",
        "Heartbeats handed to the policy",
        s.heartbeats,
    );
    put(
        "statements_total",
        "counter",
        "Statements run on the coordinator",
        s.statements,
    );
    put(
        "failed_statements_total",
        "counter",
        "Statements that failed",
        s.failed_statements,
    );
    put(
        "policy_traps_total",
        "counter",
        "Policy calls that trapped",
        s.traps,
    );
    put(
        "waiting_events",
        "gauge",
        "before_demote requests waiting for their pause",
        s.waiting_events as u64,
    );
    if let Some(m) = &s.metrics {
        put(
            "policy_statements_total",
            "counter",
            "Statements the policy issued",
            m.statements,
        );
        put(
            "policy_failed_statements_total",
            "counter",
            "Failed statements the policy saw",
            m.failed_statements,
        );
        put(
            "policy_deadline_rollbacks_total",
            "counter",
            "Transactions rolled back at their deadline",
            m.deadline_rollbacks,
        );
        put(
            "policy_expired_events_total",
            "counter",
            "Pauses dropped because their caller stopped waiting before they could start",
            m.expired_events,
        );
        put(
            "policy_sync_retries_total",
            "counter",
            "Retries after Citus' metadata-sync refusal",
            m.sync_retries,
        );
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        out,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn basic_auth_checks_user_and_password() {
        let expected = digest("admin:s3cret");
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, &expected));
        let good = base64::engine::general_purpose::STANDARD.encode("admin:s3cret");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {good}")).unwrap(),
        );
        assert!(authorized(&h, &expected));
        let bad = base64::engine::general_purpose::STANDARD.encode("admin:s3cre");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {bad}")).unwrap(),
        );
        assert!(!authorized(&h, &expected));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(!authorized(&h, &expected));
    }

    #[test]
    fn reloads_come_from_loopback_unless_authentication_is_set() {
        let remote: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        assert!(!reload_allowed(remote, false));
        assert!(reload_allowed(remote, true));
        assert!(reload_allowed("127.0.0.1".parse().unwrap(), false));
        assert!(reload_allowed("::1".parse().unwrap(), false));
    }

    #[test]
    fn the_basic_scheme_is_case_insensitive() {
        let expected = digest("u:p");
        let good = base64::engine::general_purpose::STANDARD.encode("u:p");
        for scheme in ["Basic", "basic", "BASIC", "bAsIc"] {
            let mut h = HeaderMap::new();
            h.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("{scheme} {good}")).unwrap(),
            );
            assert!(authorized(&h, &expected), "{scheme}");
        }
    }

    #[test]
    fn echoed_input_is_cut() {
        assert_eq!(truncated("abc", 5), "abc");
        let t = truncated(&"y".repeat(60_000), 200);
        assert!(t.len() < 260 && t.ends_with("(60000 bytes)"), "{t}");
    }

    #[test]
    fn tls_errors_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        std::fs::write(&cert, "not pem").unwrap();
        std::fs::write(&key, "not pem").unwrap();
        assert_eq!(tls_config(&cert, &key).unwrap_err().0, "restapi.certfile");
        assert_eq!(
            tls_config(&dir.path().join("missing"), &key).unwrap_err().0,
            "restapi.certfile"
        );
    }
}
