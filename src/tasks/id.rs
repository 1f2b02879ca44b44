//! Task ids that carry their own routing: `task_<payload>.<mac>`, where the payload (base64url
//! JSON) names the upstream, the upstream's task id (or the gateway's own id for tasks it runs),
//! the model, the media type, the creation time and the owner (a prefix of the owning key's
//! sha256), and the MAC is HMAC-SHA256 with the task secret. Any gateway instance with the same
//! secret can answer a poll without shared state, a restart keeps relayed tasks alive, and a
//! forged or altered id fails the MAC. Pure.
//! Imports: `auth::hex`. Nothing that does IO.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Bytes of the owner's key digest carried in the id.
pub const OWNER_PREFIX: usize = 12;
/// Bytes of the MAC kept (128 bits).
const MAC_LEN: usize = 16;

/// Where a task lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// Relayed to an upstream task API; `upstream_id` is the upstream's id.
    #[serde(rename = "r")]
    Relayed,
    /// Run by the gateway itself; `upstream_id` is the gateway's id in its task store.
    #[serde(rename = "l")]
    Local,
}

/// What a task id says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRef {
    /// Relayed or local.
    #[serde(rename = "o")]
    pub origin: Origin,
    /// Upstream name.
    #[serde(rename = "u")]
    pub upstream: String,
    /// Upstream task id (relayed) or store id (local).
    #[serde(rename = "t")]
    pub upstream_id: String,
    /// Registered model name.
    #[serde(rename = "m")]
    pub model: String,
    /// `image`, `video` or `audio`.
    #[serde(rename = "y")]
    pub media: String,
    /// Unix seconds at submit.
    #[serde(rename = "c")]
    pub created: u64,
    /// Hex of the first `OWNER_PREFIX` bytes of the owner's key digest.
    #[serde(rename = "k")]
    pub owner: String,
    /// What the task is billed by besides images: requested seconds (video, audio), 0 if unknown.
    #[serde(rename = "s", default)]
    pub seconds: u32,
    /// The model's media prices at submit, in pico-dollars: per image, per second, per request.
    /// The task is billed at them when it ends, whatever the config says by then (a model removed
    /// or repriced meanwhile, another instance's config): every instance bills the same. `None`
    /// in ids made before prices were carried.
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub price: Option<[i64; 3]>,
    /// Pico-dollars counted against the key's budget at submit (the task's expected cost), so that
    /// only the difference is counted when its row lands. 0 in ids made before submits counted
    /// anything: their whole cost counts then.
    #[serde(rename = "b", default, skip_serializing_if = "is_zero")]
    pub charged: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn mac(secret: &[u8], payload: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    m.update(b"cheapmodel-task-v1:");
    m.update(payload);
    m.finalize().into_bytes()[..MAC_LEN].to_vec()
}

/// Signs `task` into an id.
pub fn encode(secret: &[u8], task: &TaskRef) -> String {
    let payload = serde_json::to_vec(task).unwrap_or_default();
    let tag = mac(secret, &payload);
    format!("task_{}.{}", B64.encode(&payload), B64.encode(tag))
}

/// Verifies and reads an id. `None` for anything forged, altered or malformed.
pub fn decode(secret: &[u8], id: &str) -> Option<TaskRef> {
    let rest = id.strip_prefix("task_")?;
    if rest.len() > 4096 {
        return None;
    }
    let (p, t) = rest.split_once('.')?;
    let payload = B64.decode(p).ok()?;
    let tag = B64.decode(t).ok()?;
    let want = mac(secret, &payload);
    // Constant-time comparison of the tags.
    if tag.len() != want.len() || tag.iter().zip(&want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0 || want.is_empty() {
        return None;
    }
    serde_json::from_slice(&payload).ok()
}

/// The owner field for a key digest.
pub fn owner_of(digest: &[u8; 32]) -> String {
    crate::auth::hex(&digest[..OWNER_PREFIX])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TaskRef {
        TaskRef {
            origin: Origin::Relayed,
            upstream: "evolink".into(),
            upstream_id: "task-unified-1757156493-imcg5zqt".into(),
            model: "gpt-image-2".into(),
            media: "image".into(),
            created: 1_757_156_493,
            owner: owner_of(&[7u8; 32]),
            seconds: 0,
            price: Some([40_000_000_000, 0, 0]),
            charged: 40_000_000_000,
        }
    }

    #[test]
    fn an_id_made_before_prices_were_carried_still_reads() {
        let old = TaskRef { price: None, charged: 0, ..sample() };
        let id = encode(b"s", &old);
        assert!(!String::from_utf8(B64.decode(id[5..].split('.').next().unwrap_or("")).unwrap_or_default())
            .unwrap_or_default()
            .contains("\"p\""));
        assert_eq!(decode(b"s", &id), Some(old));
    }

    #[test]
    fn round_trips_and_rejects_tampering() {
        let id = encode(b"secret-1", &sample());
        assert_eq!(decode(b"secret-1", &id), Some(sample()));
        assert_eq!(decode(b"secret-2", &id), None, "another secret");
        // Flip one character anywhere: never accepted.
        for i in 5..id.len() {
            let mut b = id.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            if let Ok(s) = String::from_utf8(b) {
                if s != id {
                    assert_eq!(decode(b"secret-1", &s), None, "altered at {i}");
                }
            }
        }
        assert_eq!(decode(b"secret-1", "task_"), None);
        assert_eq!(decode(b"secret-1", "task-unified-1757156493-imcg5zqt"), None);
    }

    #[test]
    fn ids_differ_per_task() {
        let mut other = sample();
        other.upstream_id.push('x');
        assert_ne!(encode(b"s", &sample()), encode(b"s", &other));
    }
}
