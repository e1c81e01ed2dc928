//! TLS to etcd as Patroni's `etcd3` section configures it: `cacert` verifies the server
//! (without it, the system's CA bundle), `cert` + `key` present a client certificate.

use super::EtcdSettings;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// Debian's bundle of the system's trusted CAs (package ca-certificates).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Reads the certificates of a PEM file; errors name the file.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// Reads the private key of a PEM file.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("{}: no private key: {e}", path.display()))
}

/// The rustls client configuration for `settings` (which asked for https). Errors name the
/// setting at fault.
pub fn client_config(
    settings: &EtcdSettings,
) -> Result<rustls::ClientConfig, (&'static str, String)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let ca = settings
        .cacert
        .clone()
        .unwrap_or_else(|| SYSTEM_CA_BUNDLE.into());
    for cert in certificates(&ca).map_err(|e| ("etcd3.cacert", e))? {
        roots
            .add(cert)
            .map_err(|e| ("etcd3.cacert", format!("{}: {e}", ca.display())))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ("etcd3", e.to_string()))?
        .with_root_certificates(roots);
    match &settings.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = certificates(cert).map_err(|e| ("etcd3.cert", e))?;
            let key = private_key(key).map_err(|e| ("etcd3.key", e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ("etcd3.key", format!("does not fit etcd3.cert: {e}")))
        }
    }
}
