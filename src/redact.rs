//! Keeps an upstream's key out of what the caller gets. The upstream's error answers are relayed
//! (a same-dialect body as sent, a translated one's message, a media task's reason), and an
//! upstream that echoes the request's credentials in one (some do, in debug-style messages) would
//! hand the gateway's own key to every caller. Each occurrence of the key is masked with `*`, the
//! same number of bytes: a relayed body keeps its `Content-Length`, and JSON stays JSON (a key
//! holds no quote or backslash).
//!
//! Only error answers are searched: a 2xx answer is the model's text, and scanning every answer's
//! bytes would cost every request for a case that is an upstream's error path. The 401 and 403
//! answers, which name the key they got, are dropped whole (`GatewayError::UpstreamCredentials`).
//! Imports: nothing of the gateway's.

/// Keys shorter than this are not searched for: masking every occurrence of a few common bytes
/// would garble answers, and no provider's key is that short.
const MIN_SECRET: usize = 8;

/// Masks every occurrence of `secret` in `bytes`.
pub fn in_place(bytes: &mut [u8], secret: &[u8]) {
    if secret.len() < MIN_SECRET {
        return;
    }
    let mut from = 0;
    while let Some(at) = memchr::memmem::find(&bytes[from..], secret) {
        let start = from + at;
        bytes[start..start + secret.len()].fill(b'*');
        from = start + secret.len();
    }
}

/// `body` with every occurrence of `secret` masked (the same buffer when there is none).
pub fn bytes(body: bytes::Bytes, secret: &[u8]) -> bytes::Bytes {
    if secret.len() < MIN_SECRET || memchr::memmem::find(&body, secret).is_none() {
        return body;
    }
    let mut owned = body.to_vec();
    in_place(&mut owned, secret);
    owned.into()
}

/// Masks `secret` in a body that arrives in chunks, also where an occurrence straddles two: the
/// bytes that could begin one are held back until the next chunk (or the end) says.
#[derive(Debug)]
pub struct Redactor {
    secret: Box<[u8]>,
    held: Vec<u8>,
}

impl Redactor {
    /// `None` when `secret` is too short to be searched for.
    pub fn new(secret: &[u8]) -> Option<Self> {
        (secret.len() >= MIN_SECRET).then(|| Redactor { secret: secret.into(), held: Vec::new() })
    }

    /// The bytes of `chunk` that can go now (with those held from before), masked.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.held);
        out.extend_from_slice(chunk);
        in_place(&mut out, &self.secret);
        // The longest tail that is a start of the secret may be completed by the next chunk.
        let keep = (1..self.secret.len().min(out.len() + 1))
            .rev()
            .find(|&n| out[out.len() - n..] == self.secret[..n])
            .unwrap_or(0);
        self.held = out.split_off(out.len() - keep);
        out
    }

    /// What was held back, at the body's end (too short to hold the secret).
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"sk-upstream-secret-0123";

    #[test]
    fn every_occurrence_is_masked_to_the_same_length() {
        let mut body = b"{\"error\":\"bad key sk-upstream-secret-0123 (sk-upstream-secret-0123)\"}".to_vec();
        let len = body.len();
        in_place(&mut body, KEY);
        assert_eq!(body.len(), len);
        assert_eq!(String::from_utf8(body).unwrap_or_default().matches(&"*".repeat(KEY.len())).count(), 2);
        let none = bytes::Bytes::from_static(b"no key here");
        assert_eq!(bytes(none.clone(), KEY).as_ptr(), none.as_ptr(), "the same buffer when there is none");
        assert_eq!(
            &bytes(bytes::Bytes::from_static(b"Bearer sk-upstream-secret-0123"), KEY)[..],
            b"Bearer ***********************"
        );
    }

    #[test]
    fn a_key_split_across_chunks_is_masked_at_every_cut() {
        let body = b"{\"message\":\"echo: Bearer sk-upstream-secret-0123, sk-upstream-secret-0123\"}";
        let mut want = body.to_vec();
        in_place(&mut want, KEY);
        for cut_a in 0..body.len() {
            for cut_b in cut_a..body.len() {
                let mut r = Redactor::new(KEY).expect("long enough");
                let mut got = r.feed(&body[..cut_a]);
                got.extend(r.feed(&body[cut_a..cut_b]));
                got.extend(r.feed(&body[cut_b..]));
                got.extend(r.finish());
                assert_eq!(got, want, "cuts at {cut_a}, {cut_b}");
            }
        }
    }

    #[test]
    fn a_short_secret_is_not_searched_for() {
        assert!(Redactor::new(b"abc").is_none());
        let mut body = b"abc abc".to_vec();
        in_place(&mut body, b"abc");
        assert_eq!(body, b"abc abc");
    }
}
