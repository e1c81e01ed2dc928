//! A thin client of etcd v3's JSON gateway (`/v3/kv/range`, `/v3/watch`,
//! `/v3/auth/authenticate`), the same API Patroni's `dcs/etcd3.py` talks to.
//!
//! The gateway maps the gRPC messages to JSON: 64-bit integers are strings, keys and values
//! base64, fields at their default value left out (a PUT event has no `type`). A watch is one
//! POST whose response never ends: one JSON object per message. Every request but the watch
//! has a deadline; the watch is checked from outside (see the source's confirmations).

use super::EtcdSettings;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No answer: connection refused, reset, timed out.
    #[error("{endpoint}: {message}")]
    Unreachable { endpoint: String, message: String },
    /// etcd answered with an error (`code` is the gRPC status code).
    #[error("{endpoint}: etcd refused {path}: {message} (code {code})")]
    Refused {
        endpoint: String,
        path: &'static str,
        code: i64,
        message: String,
    },
    /// An answer this client cannot read.
    #[error("{endpoint}: unexpected answer to {path}: {message}")]
    Protocol {
        endpoint: String,
        path: &'static str,
        message: String,
    },
}

impl EtcdError {
    /// gRPC OUT_OF_RANGE: the requested revision has been compacted.
    pub fn is_compacted(&self) -> bool {
        matches!(self, EtcdError::Refused { code: 11, .. })
    }
}

/// One key-value pair as etcd keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

/// A range read: every pair under the prefix at `revision`.
#[derive(Clone, Debug)]
pub struct Range {
    pub revision: i64,
    pub kvs: Vec<Kv>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Put(Kv),
    /// The key and the revision that deleted it.
    Delete {
        key: String,
        mod_revision: i64,
    },
}

impl Event {
    /// The revision of the change.
    pub fn revision(&self) -> i64 {
        match self {
            Event::Put(kv) => kv.mod_revision,
            Event::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

/// A message of a watch stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchMessage {
    /// The watch exists; changes after the start revision follow.
    Created,
    /// Changes, in revision order (`revision`: the store's revision when they were sent).
    Events { revision: i64, events: Vec<Event> },
    /// A progress notification: nothing changed up to `revision`.
    Progress { revision: i64 },
    /// The start revision was compacted away: re-list.
    Compacted { compact_revision: i64 },
    /// etcd ended the watch for another reason.
    Canceled(String),
}

/// A connection to one of the configured endpoints (rotated on failure), with its token.
pub struct Client {
    http: reqwest::Client,
    endpoints: Vec<String>,
    current: usize,
    auth: Option<(String, String)>,
    token: Option<String>,
    timeout: Duration,
}

fn i64_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        S(String),
        I(i64),
    }
    match N::deserialize(d)? {
        N::I(i) => Ok(i),
        N::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

#[derive(Deserialize, Default)]
struct RawHeader {
    #[serde(default, deserialize_with = "i64_or_string")]
    revision: i64,
}

#[derive(Deserialize)]
struct RawKv {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default, deserialize_with = "i64_or_string")]
    mod_revision: i64,
}

#[derive(Deserialize)]
struct RawRange {
    #[serde(default)]
    header: RawHeader,
    #[serde(default)]
    kvs: Vec<RawKv>,
    #[serde(default, deserialize_with = "i64_or_string")]
    count: i64,
}

/// How many keys a prefix holds and the newest change among them: equal fingerprints at two
/// moments mean no key was put or deleted in between (a put raises the newest revision, a
/// delete alone lowers the count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub count: i64,
    pub max_mod_revision: i64,
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(default, rename = "type")]
    kind: String,
    kv: RawKv,
}

#[derive(Deserialize)]
struct RawWatchResponse {
    #[serde(default)]
    header: RawHeader,
    #[serde(default)]
    created: bool,
    #[serde(default)]
    canceled: bool,
    #[serde(default, deserialize_with = "i64_or_string")]
    compact_revision: i64,
    #[serde(default)]
    cancel_reason: String,
    #[serde(default)]
    events: Vec<RawEvent>,
}

#[derive(Deserialize)]
struct RawWatchEnvelope {
    result: Option<RawWatchResponse>,
    error: Option<Value>,
}

/// The key just past every key that starts with `prefix` (etcd's `range_end` for a prefix).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn decode_kv(raw: RawKv) -> Result<Kv, String> {
    let key = B64.decode(&raw.key).map_err(|e| format!("key: {e}"))?;
    let value = B64.decode(&raw.value).map_err(|e| format!("value: {e}"))?;
    Ok(Kv {
        key: String::from_utf8_lossy(&key).into_owned(),
        value,
        mod_revision: raw.mod_revision,
    })
}

/// Reads one watch message (the `{"result": ...}` or `{"error": ...}` envelope).
fn watch_message(v: Value) -> Result<WatchMessage, String> {
    let env: RawWatchEnvelope = serde_json::from_value(v).map_err(|e| e.to_string())?;
    if let Some(e) = env.error {
        return Ok(WatchMessage::Canceled(
            e.get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| e.to_string()),
        ));
    }
    let r = env.result.ok_or("neither result nor error")?;
    if r.compact_revision > 0 {
        return Ok(WatchMessage::Compacted {
            compact_revision: r.compact_revision,
        });
    }
    if r.canceled {
        return Ok(WatchMessage::Canceled(if r.cancel_reason.is_empty() {
            "canceled".into()
        } else {
            r.cancel_reason
        }));
    }
    if r.created {
        return Ok(WatchMessage::Created);
    }
    if r.events.is_empty() {
        return Ok(WatchMessage::Progress {
            revision: r.header.revision,
        });
    }
    let events = r
        .events
        .into_iter()
        .map(|e| {
            let kv = decode_kv(e.kv)?;
            Ok(match e.kind.as_str() {
                "" | "PUT" => Event::Put(kv),
                "DELETE" => Event::Delete {
                    key: kv.key,
                    mod_revision: kv.mod_revision,
                },
                other => return Err(format!("unknown event type {other:?}")),
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(WatchMessage::Events {
        revision: r.header.revision,
        events,
    })
}

impl Client {
    /// `timeout` bounds connecting and every request except the watch stream.
    pub fn new(settings: &EtcdSettings, timeout: Duration) -> Result<Client, String> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(timeout)
            .tcp_keepalive(Duration::from_secs(5))
            // etcd is named explicitly; a proxy from the environment would be a surprise.
            .no_proxy();
        if settings.https {
            builder = builder.use_preconfigured_tls(
                super::tls::client_config(settings).map_err(|(path, e)| format!("{path}: {e}"))?,
            );
        }
        Ok(Client {
            http: builder.build().map_err(|e| format!("etcd3: {e}"))?,
            endpoints: settings.urls(),
            current: 0,
            auth: settings.auth.clone(),
            token: None,
            timeout,
        })
    }

    /// The endpoint in use.
    pub fn endpoint(&self) -> &str {
        &self.endpoints[self.current]
    }

    /// Whether a login is due before the next request.
    pub fn needs_token(&self) -> bool {
        self.auth.is_some() && self.token.is_none()
    }

    pub fn forget_token(&mut self) {
        self.token = None;
    }

    /// Moves to the next configured endpoint (after a failure) and forgets the token.
    pub fn rotate(&mut self) {
        self.current = (self.current + 1) % self.endpoints.len();
        self.token = None;
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> EtcdError {
        EtcdError::Unreachable {
            endpoint: self.endpoint().to_string(),
            message: e.to_string(),
        }
    }

    fn protocol(&self, path: &'static str, e: impl std::fmt::Display) -> EtcdError {
        EtcdError::Protocol {
            endpoint: self.endpoint().to_string(),
            path,
            message: e.to_string(),
        }
    }

    async fn send(
        &self,
        path: &'static str,
        body: &Value,
        deadline: Option<Duration>,
    ) -> Result<reqwest::Response, EtcdError> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.endpoint()))
            .json(body);
        if let Some(t) = deadline {
            req = req.timeout(t);
        }
        if let Some(token) = &self.token {
            req = req.header("Authorization", token);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.unreachable(error_chain(&e)))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Err(EtcdError::Refused {
            endpoint: self.endpoint().to_string(),
            path,
            code: v.get("code").and_then(Value::as_i64).unwrap_or(-1),
            message: v
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("HTTP {status}: {text}")),
        })
    }

    async fn call(&self, path: &'static str, body: &Value) -> Result<Value, EtcdError> {
        let resp = self.send(path, body, Some(self.timeout)).await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| self.unreachable(error_chain(&e)))?;
        serde_json::from_slice(&bytes).map_err(|e| self.protocol(path, e))
    }

    /// Logs in (when username/password are configured): the token goes into the
    /// `Authorization` header of every later request, as Patroni's etcd3 client sends it.
    pub async fn authenticate(&mut self) -> Result<(), EtcdError> {
        self.token = None;
        let Some((name, password)) = self.auth.clone() else {
            return Ok(());
        };
        let v = self
            .call(
                "/v3/auth/authenticate",
                &json!({"name": name, "password": password}),
            )
            .await?;
        let token = v
            .get("token")
            .and_then(Value::as_str)
            .ok_or_else(|| self.protocol("/v3/auth/authenticate", "no token in the answer"))?;
        self.token = Some(token.to_string());
        Ok(())
    }

    /// Every key under `prefix` (linearizable).
    pub async fn range(&self, prefix: &str) -> Result<Range, EtcdError> {
        let path = "/v3/kv/range";
        let v = self
            .call(
                path,
                &json!({"key": B64.encode(prefix), "range_end": B64.encode(prefix_end(prefix))}),
            )
            .await?;
        let raw: RawRange = serde_json::from_value(v).map_err(|e| self.protocol(path, e))?;
        let kvs = raw
            .kvs
            .into_iter()
            .map(decode_kv)
            .collect::<Result<_, _>>()
            .map_err(|e| self.protocol(path, e))?;
        Ok(Range {
            revision: raw.header.revision,
            kvs,
        })
    }

    /// The prefix's [`Fingerprint`] (linearizable) and the store's revision it was read at:
    /// one key comes back, whatever the size of the formation, so confirming often costs little.
    pub async fn fingerprint(&self, prefix: &str) -> Result<(Fingerprint, i64), EtcdError> {
        let path = "/v3/kv/range";
        let v = self
            .call(
                path,
                &json!({"key": B64.encode(prefix), "range_end": B64.encode(prefix_end(prefix)),
                        "keys_only": true, "limit": 1, "sort_order": "DESCEND", "sort_target": "MOD"}),
            )
            .await?;
        let raw: RawRange = serde_json::from_value(v).map_err(|e| self.protocol(path, e))?;
        let fingerprint = Fingerprint {
            count: raw.count,
            max_mod_revision: raw.kvs.first().map(|kv| kv.mod_revision).unwrap_or(0),
        };
        Ok((fingerprint, raw.header.revision))
    }

    /// Starts a watch of every key under `prefix` from `start_revision` on.
    pub async fn watch(&self, prefix: &str, start_revision: i64) -> Result<Watch, EtcdError> {
        let body = json!({"create_request": {
            "key": B64.encode(prefix), "range_end": B64.encode(prefix_end(prefix)),
            "start_revision": start_revision, "progress_notify": true}});
        // No total deadline: the stream lives as long as the watch. Its headers must come
        // back in time, though.
        let resp = tokio::time::timeout(self.timeout, self.send("/v3/watch", &body, None))
            .await
            .map_err(|_| self.unreachable("no answer to the watch request in time"))??;
        Ok(Watch {
            resp,
            buf: Vec::new(),
            endpoint: self.endpoint().to_string(),
        })
    }
}

/// An open watch stream.
pub struct Watch {
    resp: reqwest::Response,
    buf: Vec<u8>,
    endpoint: String,
}

impl Watch {
    /// The next message. Cancel-safe: bytes read stay in the buffer.
    pub async fn next(&mut self) -> Result<WatchMessage, EtcdError> {
        loop {
            if let Some(msg) = self.take()? {
                return Ok(msg);
            }
            match self.resp.chunk().await {
                Ok(Some(bytes)) => self.buf.extend_from_slice(&bytes),
                Ok(None) => {
                    return Err(EtcdError::Unreachable {
                        endpoint: self.endpoint.clone(),
                        message: "the watch stream ended".into(),
                    })
                }
                Err(e) => {
                    return Err(EtcdError::Unreachable {
                        endpoint: self.endpoint.clone(),
                        message: format!("the watch stream broke: {}", error_chain(&e)),
                    })
                }
            }
        }
    }

    /// One complete JSON value from the front of the buffer, if there is one.
    fn take(&mut self) -> Result<Option<WatchMessage>, EtcdError> {
        let protocol = |message: String| EtcdError::Protocol {
            endpoint: self.endpoint.clone(),
            path: "/v3/watch",
            message,
        };
        let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
        match it.next() {
            None => {
                self.buf.clear();
                Ok(None)
            }
            Some(Err(e)) if e.is_eof() => Ok(None),
            Some(Err(e)) => Err(protocol(e.to_string())),
            Some(Ok(v)) => {
                let used = it.byte_offset();
                self.buf.drain(..used);
                watch_message(v).map(Some).map_err(protocol)
            }
        }
    }
}

/// reqwest's errors hide their cause (timeout, refused) behind "error sending request".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end("/service/citus/"), b"/service/citus0".to_vec());
        assert_eq!(prefix_end("\u{7f}"), vec![0x80]);
    }

    #[test]
    fn reads_gateway_watch_messages() {
        let m = |s: &str| watch_message(serde_json::from_str(s).unwrap()).unwrap();
        assert_eq!(
            m(r#"{"result":{"header":{"revision":"3"},"created":true}}"#),
            WatchMessage::Created
        );
        assert_eq!(
            m(r#"{"result":{"header":{"raft_term":"2"},"canceled":true,"compact_revision":"3"}}"#),
            WatchMessage::Compacted {
                compact_revision: 3
            }
        );
        assert_eq!(
            m(r#"{"result":{"header":{"revision":"7"},"events":[
                {"kv":{"key":"L2E=","value":"eA==","mod_revision":"6"}},
                {"type":"DELETE","kv":{"key":"L2I=","mod_revision":"7"}}]}}"#),
            WatchMessage::Events {
                revision: 7,
                events: vec![
                    Event::Put(Kv {
                        key: "/a".into(),
                        value: b"x".to_vec(),
                        mod_revision: 6
                    }),
                    Event::Delete {
                        key: "/b".into(),
                        mod_revision: 7
                    }
                ]
            }
        );
        assert_eq!(
            m(r#"{"result":{"header":{"revision":"9"}}}"#),
            WatchMessage::Progress { revision: 9 }
        );
        assert!(matches!(
            m(r#"{"error":{"grpc_code":14,"message":"etcdserver: no leader"}}"#),
            WatchMessage::Canceled(s) if s.contains("no leader")
        ));
    }
}
