//! The DCS as Patroni keeps it in etcd v3: one range read, then a watch from its revision.
//!
//! A background task owns the connection. It lists every key under `/<namespace>/<scope>/`,
//! publishes the view built from them, and follows a watch from the next revision; a broken
//! watch is resumed from the last revision seen, and a compacted one (or a confirmation that
//! disagrees twice) is answered by listing again. Nothing polls the data in steady state.
//!
//! Freshness: the view is *vouched* for a while after each proof that it is current (the
//! list, a watch message, or a confirmation). Every snapshot also asks etcd where it is and
//! waits (briefly) until the watch has caught up with that: an event a worker sends right
//! after writing its keys is handled on a view that has them, as the file source re-reading
//! its file would. A confirmation is a linearizable read of the
//! prefix's fingerprint (its key count and newest mod revision: one key comes back) every
//! `confirm_every` (a sixth of `ttl`), which must equal the view's:
//! it proves etcd answers (a silent or partitioned etcd fails a linearizable read in
//! bounded time) and that the watch has not missed a change. While the watch is broken, a
//! request failed, or the vouching has run out, [`EtcdSource::snapshot`] fails, so the owner
//! never acts on a view nobody can vouch for.

pub mod client;
pub mod layout;
pub mod tls;

use super::{DcsSource, SourceInfo};
use citus_ha_policy::dcs::ClusterView;
use client::{Client, EtcdError, Event, Fingerprint, WatchMessage};
use layout::{scope_prefix, Keyspace};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// Patroni's `etcd3` section plus `namespace` and `scope`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdSettings {
    /// `host:port` of every endpoint, in the order given (the first is tried first).
    pub hosts: Vec<String>,
    /// `protocol: https`.
    pub https: bool,
    /// `username` and `password`: etcd's own authentication (a token per session).
    pub auth: Option<(String, String)>,
    /// CA file that verifies the server (default: the system bundle).
    pub cacert: Option<PathBuf>,
    /// Client certificate and key files.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    pub namespace: String,
    pub scope: String,
}

impl EtcdSettings {
    pub fn urls(&self) -> Vec<String> {
        let scheme = if self.https { "https" } else { "http" };
        self.hosts
            .iter()
            .map(|h| format!("{scheme}://{h}"))
            .collect()
    }

    /// `/<namespace>/<scope>/`: every Citus group of the formation lives under it.
    pub fn prefix(&self) -> String {
        scope_prefix(&self.namespace, &self.scope)
    }
}

/// The source's clock: how often it confirms, how long a proof vouches for the view, how
/// long any request may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub confirm_every: Duration,
    pub request_timeout: Duration,
    pub vouch_for: Duration,
}

impl Timing {
    /// A sixth of `ttl` (100 ms to 5 s) between confirmations (counted from when each was
    /// sent), each bounded by the same; a proof vouches for two and a half of them. A silent
    /// etcd is noticed within a third of `ttl` after the last proof, so the owner's own `ttl`
    /// rule ends leadership at most `ttl`/3 (+ one heartbeat) later than `ttl` after etcd
    /// last answered.
    pub fn for_ttl(ttl: Duration) -> Timing {
        let i = (ttl / 6).clamp(Duration::from_millis(100), Duration::from_secs(5));
        Timing {
            confirm_every: i,
            request_timeout: i,
            vouch_for: i * 5 / 2,
        }
    }
}

/// What the background task publishes.
#[derive(Clone, Debug, Default)]
struct Published {
    view: Option<ClusterView>,
    revision: Option<i64>,
    /// Until when the view may be handed out (None: not now).
    vouched_until: Option<Instant>,
    /// Why the view cannot be vouched for now.
    error: Option<String>,
}

/// A watch-based etcd v3 source; see the module documentation.
pub struct EtcdSource {
    rx: watch::Receiver<Published>,
    /// Asks the follower to catch up with etcd as it is now.
    syncs: mpsc::Sender<oneshot::Sender<Result<(), String>>>,
    /// How long a snapshot waits for that.
    sync_wait: Duration,
    location: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EtcdSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EtcdSource {
    /// Starts the background task (it must run inside a tokio runtime). Fails only on
    /// settings that cannot work at all (TLS files).
    pub fn start(settings: &EtcdSettings, ttl: Duration) -> Result<EtcdSource, String> {
        let timing = Timing::for_ttl(ttl);
        let client = Client::new(settings, timing.request_timeout)?;
        let prefix = settings.prefix();
        let location = format!("{} {prefix}", settings.urls().join(","));
        let (sync_tx, sync_rx) = mpsc::channel(16);
        let (tx, rx) = watch::channel(Published {
            error: Some("connecting".into()),
            ..Published::default()
        });
        let task = tokio::spawn(
            Follower {
                client,
                prefix,
                timing,
                tx,
                keys: None,
                revision: 0,
                reported: HashSet::new(),
                syncs: sync_rx,
                waiting: Vec::new(),
                sync_wait: timing.request_timeout.min(SYNC_WAIT),
            }
            .run(),
        );
        Ok(EtcdSource {
            rx,
            syncs: sync_tx,
            sync_wait: timing.request_timeout.min(SYNC_WAIT),
            location,
            task,
        })
    }
}

impl DcsSource for EtcdSource {
    async fn snapshot(&mut self) -> anyhow::Result<ClusterView> {
        if let Some(e) = &self.rx.borrow().error {
            anyhow::bail!("etcd3 {}: {e}", self.location);
        }
        let (tx, rx) = oneshot::channel();
        let behind = || format!("could not catch up with etcd within {:?}", self.sync_wait);
        let synced = match self.syncs.try_send(tx) {
            Err(_) => Err(behind()),
            Ok(()) => match tokio::time::timeout(self.sync_wait, rx).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) | Err(_) => Err(behind()),
            },
        };
        if let Err(why) = synced {
            // The follower's own error says more (it dropped the request because of it).
            let error = self.rx.borrow().error.clone();
            anyhow::bail!("etcd3 {}: {}", self.location, error.unwrap_or(why));
        }
        let p = self.rx.borrow_and_update();
        if let Some(e) = &p.error {
            anyhow::bail!("etcd3 {}: {e}", self.location);
        }
        match (&p.view, p.vouched_until) {
            (Some(v), Some(until)) if Instant::now() < until => Ok(v.clone()),
            (None, _) => anyhow::bail!("etcd3 {}: no view read yet", self.location),
            _ => anyhow::bail!(
                "etcd3 {}: the view is not confirmed current (no answer from etcd in time)",
                self.location
            ),
        }
    }

    async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await
        }
    }

    fn describe(&self) -> SourceInfo {
        SourceInfo {
            kind: "etcd3",
            location: self.location.clone(),
            revision: self.rx.borrow().revision,
        }
    }
}

/// Why a watch ended without a failure of etcd: list again at once.
enum Relist {
    Compacted(i64),
    Mismatch,
}

/// The background task.
struct Follower {
    client: Client,
    prefix: String,
    timing: Timing,
    tx: watch::Sender<Published>,
    /// The keys as of `revision`; None until listed (or after a compaction or mismatch).
    keys: Option<Keyspace>,
    revision: i64,
    /// Malformed member keys already reported, by (key, mod_revision).
    reported: HashSet<(String, i64)>,
    /// Snapshots asking to catch up with etcd, and those waiting for the watch to get there.
    syncs: mpsc::Receiver<oneshot::Sender<Result<(), String>>>,
    waiting: Vec<Sync>,
    sync_wait: Duration,
}

/// The longest a snapshot waits for the watch to catch up with etcd.
const SYNC_WAIT: Duration = Duration::from_millis(1500);

/// A snapshot waiting until the view has every change etcd had at `revision`.
struct Sync {
    etcd_has: Fingerprint,
    revision: i64,
    deadline: Instant,
    reply: oneshot::Sender<Result<(), String>>,
}

impl Follower {
    async fn run(mut self) {
        loop {
            let ended = self.follow().await;
            // Whoever waits for this watch to catch up is told it failed (its reply dropped).
            self.waiting.clear();
            match ended {
                Ok(Relist::Compacted(at)) => {
                    tracing::info!(
                        revision = self.revision,
                        compact_revision = at,
                        "etcd3: the watch's start revision was compacted; listing again"
                    );
                    self.keys = None;
                }
                Ok(Relist::Mismatch) => {
                    tracing::warn!(
                        revision = self.revision,
                        "etcd3: a confirmation disagrees with the watched view; listing again"
                    );
                    self.keys = None;
                }
                Err(e) => {
                    let msg = e.to_string();
                    tracing::warn!("etcd3: {msg}; retrying");
                    self.fail(msg);
                    if matches!(e, EtcdError::Refused { code: 16, .. }) {
                        // Unauthenticated: the token expired or was revoked; log in again.
                        self.client.forget_token();
                    } else {
                        self.client.rotate();
                    }
                    tokio::time::sleep(self.timing.confirm_every).await;
                }
            }
        }
    }

    /// Marks the view as not vouched for; notifies when that is news.
    fn fail(&self, msg: String) {
        self.tx.send_if_modified(|p| {
            let news = p.error.as_deref() != Some(msg.as_str());
            p.error = Some(msg);
            p.vouched_until = None;
            news
        });
    }

    /// The view is current as of `proof` (a request sent then was answered).
    fn vouch(&self, proof: Instant) {
        let until = proof + self.timing.vouch_for;
        self.tx.send_if_modified(|p| {
            let news = p.error.take().is_some() || p.vouched_until.is_none();
            p.vouched_until = Some(until);
            p.revision = Some(self.revision);
            news
        });
    }

    /// Publishes the view built from the keys (notifying only when it changed).
    fn publish(&self) {
        let view = self.keys.as_ref().map(Keyspace::view);
        self.tx.send_if_modified(|p| {
            p.revision = Some(self.revision);
            if p.view != view {
                p.view = view;
                true
            } else {
                false
            }
        });
    }

    fn put(&mut self, key: String, mod_revision: i64, value: &[u8]) {
        let keys = self.keys.get_or_insert_with(Keyspace::default);
        if let Some(problem) = keys.put(&self.prefix, key.clone(), mod_revision, value) {
            if self.reported.len() > 10_000 {
                self.reported.clear();
            }
            if self.reported.insert((key, mod_revision)) {
                tracing::warn!("etcd3: malformed member: {problem}");
            }
        }
    }

    /// Whether the view has every change etcd had when it answered `etcd_has` at `revision`:
    /// the same fingerprint, or a change after that revision already seen (the watch
    /// delivers in order).
    fn caught_up(&self, etcd_has: Fingerprint, revision: i64) -> bool {
        self.revision > revision
            || self
                .keys
                .as_ref()
                .is_some_and(|k| k.fingerprint() == etcd_has)
    }

    fn answer_caught_up(&mut self) {
        for s in std::mem::take(&mut self.waiting) {
            if self.caught_up(s.etcd_has, s.revision) {
                let _ = s.reply.send(Ok(()));
            } else {
                self.waiting.push(s);
            }
        }
    }

    /// Lists (when needed), watches, and confirms until something ends the watch.
    async fn follow(&mut self) -> Result<Relist, EtcdError> {
        if self.client.needs_token() {
            self.client.authenticate().await?;
        }
        let listed = self.keys.is_none();
        if listed {
            let sent = Instant::now();
            let range = self.client.range(&self.prefix).await?;
            self.keys = Some(Keyspace::default());
            for kv in range.kvs {
                self.put(kv.key, kv.mod_revision, &kv.value);
            }
            self.revision = range.revision;
            self.publish();
            self.vouch(sent);
            tracing::info!(
                revision = self.revision,
                keys = self.keys.as_ref().map(Keyspace::len).unwrap_or(0),
                endpoint = self.client.endpoint(),
                "etcd3: listed the scope"
            );
        }
        let mut watch = self.client.watch(&self.prefix, self.revision + 1).await?;
        match tokio::time::timeout(self.timing.request_timeout, watch.next()).await {
            Err(_) => {
                return Err(EtcdError::Unreachable {
                    endpoint: self.client.endpoint().into(),
                    message: "the watch was not created in time".into(),
                })
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(WatchMessage::Created)) => {}
            Ok(Ok(WatchMessage::Compacted { compact_revision })) => {
                return Ok(Relist::Compacted(compact_revision))
            }
            Ok(Ok(other)) => {
                return Err(EtcdError::Protocol {
                    endpoint: self.client.endpoint().into(),
                    path: "/v3/watch",
                    message: format!("expected the watch to be created, got {other:?}"),
                })
            }
        }
        // A resumed watch proves nothing until a confirmation agrees with it: confirm now.
        let mut next_confirm = if listed {
            Instant::now() + self.timing.confirm_every
        } else {
            Instant::now()
        };
        let mut confirmed = listed;
        let mut strikes = 0;
        loop {
            let sync_deadline = self
                .waiting
                .iter()
                .map(|s| s.deadline)
                .min()
                .unwrap_or_else(Instant::now);
            tokio::select! {
                msg = watch.next() => match msg? {
                    WatchMessage::Events { events, .. } => {
                        let received = Instant::now();
                        for e in events {
                            // The watch resumes after the last change seen, which is also the
                            // revision the view reflects.
                            self.revision = self.revision.max(e.revision());
                            match e {
                                Event::Put(kv) => self.put(kv.key, kv.mod_revision, &kv.value),
                                Event::Delete { key, .. } => {
                                    if let Some(k) = self.keys.as_mut() {
                                        k.delete(&key);
                                    }
                                }
                            }
                        }
                        self.publish();
                        if confirmed && strikes == 0 {
                            self.vouch(received);
                        }
                        self.answer_caught_up();
                    }
                    WatchMessage::Progress { revision } => {
                        self.revision = self.revision.max(revision);
                        if confirmed && strikes == 0 {
                            self.vouch(Instant::now());
                        }
                        self.answer_caught_up();
                    }
                    WatchMessage::Created => {}
                    WatchMessage::Compacted { compact_revision } => {
                        return Ok(Relist::Compacted(compact_revision))
                    }
                    WatchMessage::Canceled(why) => {
                        return Err(EtcdError::Protocol {
                            endpoint: self.client.endpoint().into(),
                            path: "/v3/watch",
                            message: format!("etcd canceled the watch: {why}"),
                        })
                    }
                },
                Some(reply) = self.syncs.recv() => {
                    let sent = Instant::now();
                    let (etcd_has, revision) = self.client.fingerprint(&self.prefix).await?;
                    if self.caught_up(etcd_has, revision) {
                        // As good as a confirmation.
                        strikes = 0;
                        confirmed = true;
                        self.vouch(sent);
                        let _ = reply.send(Ok(()));
                    } else {
                        self.waiting.push(Sync {
                            etcd_has,
                            revision,
                            deadline: sent + self.sync_wait,
                            reply,
                        });
                    }
                }
                _ = tokio::time::sleep_until(sync_deadline), if !self.waiting.is_empty() => {
                    let now = Instant::now();
                    for s in std::mem::take(&mut self.waiting) {
                        if s.deadline <= now {
                            let _ = s.reply.send(Err(format!(
                                "the watch is behind etcd (at revision {}, etcd at {})",
                                self.revision, s.revision
                            )));
                        } else {
                            self.waiting.push(s);
                        }
                    }
                }
                _ = tokio::time::sleep_until(next_confirm) => {
                    let sent = Instant::now();
                    let (etcd_has, _) = self.client.fingerprint(&self.prefix).await?;
                    let agrees = self.keys.as_ref().is_some_and(|k| k.fingerprint() == etcd_has);
                    if agrees {
                        strikes = 0;
                        confirmed = true;
                        self.vouch(sent);
                        // From when this one was sent: the next proof lands before this
                        // one's vouching runs out, however long this answer took.
                        next_confirm = (sent + self.timing.confirm_every).max(Instant::now());
                    } else {
                        // A change may be on its way through the watch: look again shortly,
                        // and list again if it still disagrees.
                        strikes += 1;
                        if strikes >= 2 {
                            return Ok(Relist::Mismatch);
                        }
                        next_confirm = Instant::now()
                            + (self.timing.confirm_every / 4).max(Duration::from_millis(20));
                    }
                }
            }
        }
    }
}
