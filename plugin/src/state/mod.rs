//! The handler's state as bytes: what a policy swap and the host's trap-recovery snapshot
//! carry from one build (or instance) to the next.
//!
//! Format 2 (the default) is compact and binary: `\0CHS`, the format as a little-endian u32,
//! then the handler in postcard's encoding. It is ~6x smaller and parses ~5x faster than the
//! JSON of format 1, which matters because the host snapshots the state after every turn and
//! a swap must finish in a few milliseconds with thousands of groups. Format 1 (JSON) is still
//! read, and written on request for a swap to a build that predates format 2.
//!
//! Each format is its own set of types ([`v1`], [`v2`]): what is written borrows the handler,
//! what is read is owned and converted into it (`handler/transfer.rs`), so the handler's
//! fields can change without changing either format's bytes. Which format is written is which
//! type is serialised.

pub mod v1;
pub mod v2;

use crate::handler::Handler;
use serde::Deserialize;

/// The newest state format this build writes and reads; bump when the shape changes.
pub const STATE_FORMAT: u32 = 2;
/// The JSON format every build reads.
pub const JSON_STATE_FORMAT: u32 = 1;

const MAGIC: &[u8; 4] = b"\0CHS";

pub fn export(h: &Handler) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&STATE_FORMAT.to_le_bytes());
    postcard::to_extend(&h.to_v2(), out).expect("state serialises")
}

pub fn export_json(h: &Handler) -> Vec<u8> {
    serde_json::to_vec(&v1::Export {
        format: JSON_STATE_FORMAT,
        handler: h.to_v2().into(),
    })
    .expect("state serialises")
}

pub fn import(bytes: &[u8]) -> Result<Handler, String> {
    match bytes.strip_prefix(MAGIC.as_slice()) {
        Some(rest) => import_binary(rest),
        None => import_json(bytes),
    }
}

fn import_binary(rest: &[u8]) -> Result<Handler, String> {
    if cfg!(feature = "state-json-only") {
        // What a build from before format 2 answers (a test build of the swap back).
        return Err("state is not a citus-ha export: expected value at line 1 column 1".into());
    }
    let (format, body) = rest
        .split_first_chunk::<4>()
        .ok_or("state is cut short: no format after the magic")?;
    let format = u32::from_le_bytes(*format);
    if format > STATE_FORMAT {
        return Err(format!(
            "state format {format} is newer than this build understands ({STATE_FORMAT})"
        ));
    }
    if format != STATE_FORMAT {
        return Err(format!("state format {format} is not a binary format"));
    }
    postcard::from_bytes::<v2::Handler>(body)
        .map(Handler::from)
        .map_err(|e| format!("state does not parse (format {format}): {e}"))
}

/// Format 1 as read: format 2's owned values under their names.
#[derive(Deserialize)]
struct Json {
    format: u32,
    handler: v2::Handler,
}

fn import_json(bytes: &[u8]) -> Result<Handler, String> {
    #[derive(Deserialize)]
    struct Header {
        format: u32,
    }
    // One parse in the usual case; the header is read on its own only to explain a failure.
    let parsed = serde_json::from_slice::<Json>(bytes);
    if let Ok(e) = &parsed {
        if e.format <= JSON_STATE_FORMAT {
            return parsed
                .map(|e| Handler::from(e.handler))
                .map_err(|e| format!("state does not parse: {e}"));
        }
    }
    let header: Header = serde_json::from_slice(bytes)
        .map_err(|e| format!("state is not a citus-ha export: {e}"))?;
    if header.format > STATE_FORMAT {
        return Err(format!(
            "state format {} is newer than this build understands ({STATE_FORMAT})",
            header.format
        ));
    }
    if header.format != JSON_STATE_FORMAT {
        return Err(format!("state format {} is not JSON", header.format));
    }
    parsed
        .map(|e| Handler::from(e.handler))
        .map_err(|e| format!("state does not parse: {e}"))
}
