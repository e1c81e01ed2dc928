//! Policy reloads: SIGHUP, a change of the policy file, `POST /policy/reload`. Candidates are
//! loaded (compiled) off the owner task and handed to it as a swap; SIGTERM and SIGINT end
//! the service.

use super::inbox::Input;
use super::report::SwapReport;
use crate::policy::PolicyEngine;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// SIGHUP reloads the policy; SIGTERM or SIGINT resolve the returned receiver.
pub(super) fn spawn_signal_handlers(
    reloader: Arc<Reloader>,
) -> anyhow::Result<oneshot::Receiver<&'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the policy");
            let _ = reloader.reload(None, "SIGHUP").await;
        }
    });
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        let _ = stop.send(name);
    });
    Ok(stopped)
}

/// Polls the policy file's modification time and size; a change triggers a reload.
pub(super) async fn watch_policy_file(path: PathBuf, reloader: Arc<Reloader>) {
    let stamp = |p: &PathBuf| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    };
    let mut seen = stamp(&path);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = stamp(&path);
        if now != seen && now.is_some() {
            seen = now;
            tracing::info!(path = %path.display(), "the policy file changed: reloading");
            let _ = reloader.reload(None, "policy.path changed").await;
        }
    }
}

/// Loads candidates off the owner task (compiling may take a while) and hands them to it.
pub(crate) struct Reloader {
    pub(super) engine: Arc<PolicyEngine>,
    pub(super) path: Option<PathBuf>,
    pub(super) tx: mpsc::Sender<Input>,
    /// Refused candidates, whatever refused them (loading or the swap itself).
    pub(crate) refused: Arc<AtomicU64>,
}

impl Reloader {
    /// `body`: the .wasm itself; None re-reads policy.path (or the embedded build if there is
    /// none). Refusals are logged here, so every trigger reports them the same way.
    pub(crate) async fn reload(
        &self,
        body: Option<Vec<u8>>,
        origin: &str,
    ) -> Result<SwapReport, String> {
        let r = self.try_reload(body, origin).await;
        if let Err(e) = &r {
            self.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                origin,
                "policy reload refused, the running policy stays: {e}"
            );
        }
        r
    }

    async fn try_reload(&self, body: Option<Vec<u8>>, origin: &str) -> Result<SwapReport, String> {
        let (bytes, source) = match (body, &self.path) {
            (Some(b), _) => {
                let source = format!("{origin} ({} bytes)", b.len());
                (b, source)
            }
            (None, Some(p)) => {
                let b = tokio::fs::read(p)
                    .await
                    .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                (b, p.display().to_string())
            }
            (None, None) => (crate::EMBEDDED_POLICY.to_vec(), "embedded".to_string()),
        };
        let engine = self.engine.clone();
        let candidate = tokio::task::spawn_blocking(move || engine.load(&bytes, &source))
            .await
            .map_err(|e| format!("loading the candidate failed: {e}"))??;
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Input::Swap {
                candidate: Box::new(candidate),
                origin: origin.to_string(),
                reply,
            })
            .await
            .map_err(|_| "the service is stopping".to_string())?;
        answer
            .await
            .map_err(|_| "the service is stopping".to_string())?
    }
}
