//! Caller authentication from the header bytes alone: `Authorization: Bearer <key>` or
//! `x-api-key: <key>`, hashed with sha256 and looked up in the snapshot. Runs before any body byte
//! is read. Must not read the body, write a response, or log key bytes.
//! Imports: `error`, `registry`, pingora's header type. Not `proxy`, `plan` or anything that does IO.

use std::sync::Arc;

use pingora::http::RequestHeader;
use sha2::{Digest, Sha256};

use crate::error::GatewayError;
use crate::registry::{Key, Snapshot};

/// The key bytes the caller sent, if any. A Bearer token wins over `x-api-key`.
pub fn presented_key(req: &RequestHeader) -> Option<&[u8]> {
    if let Some(v) = req.headers.get(http::header::AUTHORIZATION) {
        let v = v.as_bytes();
        if v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ") {
            let token = v[7..].trim_ascii();
            if !token.is_empty() {
                return Some(token);
            }
        }
    }
    req.headers.get("x-api-key").map(|v| v.as_bytes().trim_ascii()).filter(|v| !v.is_empty())
}

/// sha256 of a key, as stored in the config.
pub fn key_digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

/// Lowercase hex of a digest (what `cheapmodel hash-key` prints).
pub fn hex(digest: &[u8]) -> String {
    let mut s = String::with_capacity(digest.len() * 2);
    push_hex(&mut s, digest);
    s
}

/// Appends `bytes` to `out` as lowercase hex, two digits a byte.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
}

/// Lowercase-hex sha256 digest → bytes.
pub fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let b = hex.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// The registered key for this request, or 401.
pub fn authenticate(req: &RequestHeader, snapshot: &Snapshot) -> Result<Arc<Key>, GatewayError> {
    authenticate_with_digest(req, snapshot).map(|(key, _)| key)
}

/// `authenticate`, also returning the key's sha256 (task ownership is recorded by digest), so
/// the key is hashed once per request.
pub fn authenticate_with_digest(
    req: &RequestHeader,
    snapshot: &Snapshot,
) -> Result<(Arc<Key>, [u8; 32]), GatewayError> {
    let key = presented_key(req).ok_or(GatewayError::MissingKey)?;
    let digest = key_digest(key);
    // A hash lookup: timing depends on the digest, not on how much of the key matched.
    let entry = snapshot.keys.get(&digest).cloned().ok_or(GatewayError::InvalidKey)?;
    Ok((entry, digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/v1/messages", None).expect("header");
        for (k, v) in headers {
            r.insert_header(k.to_string(), *v).expect("insert");
        }
        r
    }

    fn snapshot_with(key: &str) -> Snapshot {
        let mut s = Snapshot::default();
        s.keys.insert(
            key_digest(key.as_bytes()),
            Arc::new(Key {
                name: "team-a".into(),
                models: None,
                limits: Default::default(),
                budget: Default::default(),
            }),
        );
        s
    }

    #[test]
    fn bearer_and_x_api_key_both_work() {
        let s = snapshot_with("cm_abc");
        assert_eq!(&*authenticate(&req(&[("authorization", "Bearer cm_abc")]), &s).expect("ok").name, "team-a");
        assert!(authenticate(&req(&[("authorization", "bearer cm_abc")]), &s).is_ok());
        assert!(authenticate(&req(&[("x-api-key", "cm_abc")]), &s).is_ok());
    }

    #[test]
    fn missing_and_wrong_keys_are_told_apart() {
        let s = snapshot_with("cm_abc");
        assert_eq!(authenticate(&req(&[]), &s).err(), Some(GatewayError::MissingKey));
        assert_eq!(authenticate(&req(&[("authorization", "Basic cm_abc")]), &s).err(), Some(GatewayError::MissingKey));
        assert_eq!(authenticate(&req(&[("x-api-key", "cm_abd")]), &s).err(), Some(GatewayError::InvalidKey));
        assert_eq!(authenticate(&req(&[("authorization", "Bearer cm_ab")]), &s).err(), Some(GatewayError::InvalidKey));
    }

    #[test]
    fn digest_matches_sha256_hex() {
        assert_eq!(hex(&key_digest(b"test")), "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
    }
}
