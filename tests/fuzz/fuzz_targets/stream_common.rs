//! Shared by the two stream targets: split-invariance and output checks.

use cheapmodel::dialect::sse::SseDecoder;
use cheapmodel::dialect::stream::StreamTranslator;

/// Feeds `pieces` in order, then `finish`; checks that nothing is emitted after `finish`.
fn run<T: StreamTranslator>(mut t: T, pieces: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pieces {
        t.feed(p, &mut out);
    }
    t.finish(&mut out);
    let n = out.len();
    t.feed(b"data: {\"late\":true}\n\n", &mut out);
    t.finish(&mut out);
    assert_eq!(out.len(), n, "output after finish()");
    out
}

/// Every event the translator wrote carries JSON data (or OpenAI's `[DONE]`).
fn check_output(out: &[u8]) {
    let mut dec = SseDecoder::new();
    let mut check = |ev: cheapmodel::dialect::sse::Event<'_>| {
        if ev.data == b"[DONE]" {
            return;
        }
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(ev.data) {
            panic!(
                "output event data is not JSON ({e}): {:?}",
                String::from_utf8_lossy(ev.data)
            );
        }
    };
    dec.feed(out, &mut check);
    dec.finish(&mut check);
}

/// `data[0]` picks the cut (scaled over the rest), `data[1..]` is the upstream stream.
pub fn check<T: StreamTranslator>(data: &[u8], make: impl Fn() -> T) {
    let Some((&sel, input)) = data.split_first() else {
        return;
    };
    let cut = input.len() * sel as usize / 255;
    let whole = run(make(), &[input]);
    let split = run(make(), &[&input[..cut], &input[cut..]]);
    if whole != split {
        panic!(
            "split at byte {cut} of {} changes the output\n--- whole ---\n{}\n--- split ---\n{}",
            input.len(),
            String::from_utf8_lossy(&whole),
            String::from_utf8_lossy(&split)
        );
    }
    check_output(&whole);
}
