//! Split-safe Server-Sent Events decoder.
//!
//! Bytes arrive in arbitrary pieces; `SseDecoder::feed` calls back once per complete event, in
//! order, whatever the split. An event is its `data:` lines (joined with `\n`) and the last
//! `event:` name before its blank line. Lines end with `\n` or `\r\n`; comment lines (`:`),
//! `id:`, `retry:` and unknown fields are ignored (`feed_with_comments` also hands out comment
//! lines, for a stream that is rewritten but must keep its keep-alives); a blank line with no
//! `data:` line before it dispatches nothing. Between calls only the bytes of the event not yet
//! complete are kept: an event that lies whole inside one chunk is handed out as slices of that
//! chunk, without a copy.
//!
//! This is the gateway's only SSE parser: the stream translators and the same-dialect meter
//! (`usage::StreamMeter`) both read through it.
//! Imports: nothing of the gateway's. Not `proxy`, `metrics` or Pingora.

/// The most an event may hold across chunks (its data lines and its unfinished line). Past it the
/// decoder drops that event, skips to its end (the next blank line) and goes on with the next one
/// ([`SseDecoder::overflowed`] then stays true), so an upstream that never ends a line cannot grow
/// the gateway's memory without bound. Real events are kilobytes; base64 images in a stream are a
/// few megabytes.
pub const MAX_EVENT_BYTES: usize = 16 << 20;

/// One decoded event. The slices live until the callback returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// The `event:` field, if the event had one.
    pub event: Option<&'a [u8]>,
    /// The `data:` lines joined with `\n` (one leading space of each line removed).
    pub data: &'a [u8],
}

/// Where a field value of the current event is: inside the chunk being fed, or copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    None,
    /// `start..end` of the current chunk.
    Chunk(usize, usize),
    /// In the decoder's own buffer.
    Owned,
}

/// Incremental SSE decoder; see the module docs.
#[derive(Debug)]
pub struct SseDecoder {
    /// Bytes of a line whose end has not arrived yet.
    line: Vec<u8>,
    /// `event:` value when held across chunks.
    event: Vec<u8>,
    /// Joined `data:` values when held across chunks.
    data: Vec<u8>,
    event_slot: Slot,
    data_slot: Slot,
    /// Still at the very beginning of the stream (a UTF-8 BOM there is skipped).
    at_start: bool,
    /// An event grew past [`MAX_EVENT_BYTES`] (sticky).
    overflowed: bool,
    /// Skipping the rest of an oversized event, up to its blank line.
    skipping: Option<SkipLine>,
}

/// While skipping an oversized event: what the current line held so far (its bytes are not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SkipLine {
    /// Nothing yet: a `\n` now ends the event.
    Empty,
    /// Only a `\r`: a `\n` now also ends it.
    Cr,
    /// Something else: the line is not blank.
    Text,
}

impl SkipLine {
    /// The state after `bytes` (none of them `\n`) were added to a line in state `self`.
    fn after(self, bytes: &[u8]) -> SkipLine {
        match (self, bytes) {
            (state, []) => state,
            (SkipLine::Empty, b"\r") => SkipLine::Cr,
            _ => SkipLine::Text,
        }
    }
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new()
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl SseDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        SseDecoder {
            line: Vec::new(),
            event: Vec::new(),
            data: Vec::new(),
            event_slot: Slot::None,
            data_slot: Slot::None,
            at_start: true,
            overflowed: false,
            skipping: None,
        }
    }

    /// Whether an event grew past [`MAX_EVENT_BYTES`] (and was dropped); it stays true.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Reads one chunk, calling `on_event` for every event it completes.
    pub fn feed(&mut self, chunk: &[u8], on_event: impl FnMut(Event<'_>)) {
        self.feed_with_comments(chunk, on_event, |_| {});
    }

    /// `feed`, and also calls `on_comment` with every comment line (from its `:`, without its line
    /// end) as it is read.
    pub fn feed_with_comments(
        &mut self,
        chunk: &[u8],
        mut on_event: impl FnMut(Event<'_>),
        mut on_comment: impl FnMut(&[u8]),
    ) {
        let mut chunk = chunk;
        if let Some(state) = self.skipping {
            match skip_to_blank_line(state, chunk) {
                Ok(rest) => {
                    self.skipping = None;
                    chunk = rest;
                }
                Err(state) => {
                    self.skipping = Some(state);
                    return;
                }
            }
        }
        if self.at_start {
            // A BOM may itself arrive split: hold its prefix until it is decided.
            let held = self.line.len();
            let need = BOM.len() - held;
            let take = need.min(chunk.len());
            if BOM[held..held + take] == chunk[..take] {
                if take < need {
                    self.line.extend_from_slice(chunk);
                    return;
                }
                self.line.clear();
                chunk = &chunk[take..];
            }
            self.at_start = false;
        }
        let mut pos = 0;
        while let Some(nl) = memchr::memchr(b'\n', &chunk[pos..]) {
            let end = pos + nl;
            if self.line.is_empty() {
                self.on_chunk_line(chunk, pos, end, &mut on_event, &mut on_comment);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&chunk[pos..end]);
                self.on_owned_line(chunk, &line, &mut on_event, &mut on_comment);
                line.clear();
                self.line = line;
            }
            pos = end + 1;
        }
        self.line.extend_from_slice(&chunk[pos..]);
        // Whatever still points into this chunk must be copied before it goes away.
        if let Slot::Chunk(s, e) = self.event_slot {
            self.event.clear();
            self.event.extend_from_slice(&chunk[s..e]);
            self.event_slot = Slot::Owned;
        }
        if let Slot::Chunk(s, e) = self.data_slot {
            self.data.clear();
            self.data.extend_from_slice(&chunk[s..e]);
            self.data_slot = Slot::Owned;
        }
        // Checked once per chunk: what is held grows by at most one chunk between checks.
        if self.line.len() + self.data.len() + self.event.len() > MAX_EVENT_BYTES {
            self.overflowed = true;
            self.skipping = Some(SkipLine::Empty.after(&self.line));
            (self.line, self.data, self.event) = (Vec::new(), Vec::new(), Vec::new());
            (self.event_slot, self.data_slot) = (Slot::None, Slot::None);
        }
    }

    /// The stream ended: dispatches a last event that had no blank line after it.
    pub fn finish(&mut self, mut on_event: impl FnMut(Event<'_>)) {
        if self.skipping.is_some() {
            return;
        }
        if self.at_start {
            // Only a partial BOM can be held here; it is not an event.
            self.line.clear();
            self.at_start = false;
        }
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.on_owned_line(&[], &line, &mut on_event, &mut |_| {});
        }
        self.dispatch(&[], &mut on_event);
    }

    /// A line that lies whole in `chunk[start..end]` (without its `\n`).
    fn on_chunk_line(
        &mut self,
        chunk: &[u8],
        start: usize,
        end: usize,
        on_event: &mut impl FnMut(Event<'_>),
        on_comment: &mut impl FnMut(&[u8]),
    ) {
        let end = if end > start && chunk[end - 1] == b'\r' { end - 1 } else { end };
        if start == end {
            self.dispatch(chunk, on_event);
            return;
        }
        let Some((field, vs)) = split_field(&chunk[start..end]) else {
            return;
        };
        let (vs, ve) = (start + vs, end);
        match field {
            Field::Comment => on_comment(&chunk[vs..ve]),
            Field::Event => self.event_slot = Slot::Chunk(vs, ve),
            Field::Data => match self.data_slot {
                Slot::None => self.data_slot = Slot::Chunk(vs, ve),
                Slot::Chunk(s, e) => {
                    self.data.clear();
                    self.data.extend_from_slice(&chunk[s..e]);
                    self.data.push(b'\n');
                    self.data.extend_from_slice(&chunk[vs..ve]);
                    self.data_slot = Slot::Owned;
                }
                Slot::Owned => {
                    self.data.push(b'\n');
                    self.data.extend_from_slice(&chunk[vs..ve]);
                }
            },
        }
    }

    /// A line assembled from several chunks (without its `\n`); `chunk` is the current one.
    fn on_owned_line(
        &mut self,
        chunk: &[u8],
        line: &[u8],
        on_event: &mut impl FnMut(Event<'_>),
        on_comment: &mut impl FnMut(&[u8]),
    ) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.dispatch(chunk, on_event);
            return;
        }
        let Some((field, vs)) = split_field(line) else {
            return;
        };
        let value = &line[vs..];
        match field {
            Field::Comment => on_comment(value),
            Field::Event => {
                self.event.clear();
                self.event.extend_from_slice(value);
                self.event_slot = Slot::Owned;
            }
            Field::Data => {
                match self.data_slot {
                    Slot::None => self.data.clear(),
                    Slot::Chunk(s, e) => {
                        self.data.clear();
                        self.data.extend_from_slice(&chunk[s..e]);
                        self.data.push(b'\n');
                    }
                    Slot::Owned => self.data.push(b'\n'),
                }
                self.data.extend_from_slice(value);
                self.data_slot = Slot::Owned;
            }
        }
    }

    /// Blank line: hands out the current event (if it had data) and starts a new one.
    fn dispatch(&mut self, chunk: &[u8], on_event: &mut impl FnMut(Event<'_>)) {
        let data = match self.data_slot {
            Slot::None => None,
            Slot::Chunk(s, e) => chunk.get(s..e),
            Slot::Owned => Some(&self.data[..]),
        };
        if let Some(data) = data {
            let event = match self.event_slot {
                Slot::None => None,
                Slot::Chunk(s, e) => chunk.get(s..e),
                Slot::Owned => Some(&self.event[..]),
            };
            on_event(Event { event, data });
        }
        self.event_slot = Slot::None;
        self.data_slot = Slot::None;
    }
}

/// Skips the rest of an oversized event: `Ok` with what follows its blank line, or `Err` with the
/// state of the line still open at the chunk's end.
fn skip_to_blank_line(mut state: SkipLine, chunk: &[u8]) -> Result<&[u8], SkipLine> {
    let mut pos = 0;
    while let Some(nl) = memchr::memchr(b'\n', &chunk[pos..]) {
        if state.after(&chunk[pos..pos + nl]) != SkipLine::Text {
            return Ok(&chunk[pos + nl + 1..]);
        }
        state = SkipLine::Empty;
        pos += nl + 1;
    }
    Err(state.after(&chunk[pos..]))
}

enum Field {
    Event,
    Data,
    Comment,
}

/// The field of a non-blank line and where its value starts (`None`: a line to ignore).
fn split_field(line: &[u8]) -> Option<(Field, usize)> {
    let (name, value_start) = match memchr::memchr(b':', line) {
        Some(0) => return Some((Field::Comment, 0)),
        Some(c) => (&line[..c], if line.get(c + 1) == Some(&b' ') { c + 2 } else { c + 1 }),
        None => (line, line.len()),
    };
    match name {
        b"data" => Some((Field::Data, value_start)),
        b"event" => Some((Field::Event, value_start)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(pieces: &[&[u8]]) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
        let mut d = SseDecoder::new();
        let mut got = Vec::new();
        for p in pieces {
            d.feed(p, |e| got.push((e.event.map(<[u8]>::to_vec), e.data.to_vec())));
        }
        d.finish(|e| got.push((e.event.map(<[u8]>::to_vec), e.data.to_vec())));
        got
    }

    fn all_splits(s: &[u8]) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
        let whole = collect(&[s]);
        for cut in 0..=s.len() {
            assert_eq!(collect(&[&s[..cut], &s[cut..]]), whole, "split at {cut}");
        }
        let bytes: Vec<&[u8]> = s.chunks(1).collect();
        assert_eq!(collect(&bytes), whole, "1-byte feeds");
        whole
    }

    fn ev(name: Option<&str>, data: &str) -> (Option<Vec<u8>>, Vec<u8>) {
        (name.map(|n| n.as_bytes().to_vec()), data.as_bytes().to_vec())
    }

    #[test]
    fn events_with_names_multiline_data_and_crlf() {
        let s = b"event: a\ndata: one\n\n: comment\r\nevent:b\r\ndata:x\r\ndata:  y\r\nid: 7\r\n\r\ndata\n\ndata: [DONE]\n\n";
        assert_eq!(all_splits(s), vec![ev(Some("a"), "one"), ev(Some("b"), "x\n y"), ev(None, ""), ev(None, "[DONE]")]);
    }

    #[test]
    fn blank_lines_without_data_dispatch_nothing() {
        let s = b"\n\nevent: ping\n\nretry: 5\n\n:keepalive\n\n";
        assert!(all_splits(s).is_empty());
    }

    #[test]
    fn trailing_event_without_blank_line_is_dispatched_at_finish() {
        assert_eq!(all_splits(b"data: a\n\ndata: b"), vec![ev(None, "a"), ev(None, "b")]);
        assert_eq!(all_splits(b"data: a\n\nevent: e\ndata: b\n"), vec![ev(None, "a"), ev(Some("e"), "b")]);
    }

    #[test]
    fn leading_bom_is_skipped() {
        assert_eq!(all_splits(b"\xEF\xBB\xBFdata: a\n\n"), vec![ev(None, "a")]);
        assert_eq!(all_splits(b"\xEF\xBBdata: a\n\n"), Vec::new());
        assert!(all_splits(b"\xEF").is_empty());
    }

    #[test]
    fn only_the_incomplete_event_is_kept() {
        let mut d = SseDecoder::new();
        let mut n = 0;
        for _ in 0..1000 {
            d.feed(b"data: {\"x\":1}\n\ndata: par", |_| n += 1);
            d.feed(b"tial\n\n", |_| n += 1);
        }
        assert_eq!(n, 2000);
        assert!(d.line.is_empty() && d.line.capacity() < 64);
    }

    #[test]
    fn an_oversized_event_is_dropped_and_the_next_one_decoded() {
        let mut d = SseDecoder::new();
        let mut events = Vec::new();
        d.feed(b"data: {\"a\":1}\n\n", |e| events.push(e.data.to_vec()));
        let chunk = vec![b'x'; 64 * 1024];
        let mut fed = 0;
        d.feed(b"data: ", |e| events.push(e.data.to_vec()));
        while !d.overflowed() && fed <= MAX_EVENT_BYTES + 2 * chunk.len() {
            d.feed(&chunk, |e| events.push(e.data.to_vec()));
            fed += chunk.len();
        }
        assert!(d.overflowed(), "still buffering after {fed} bytes");
        assert!(fed <= MAX_EVENT_BYTES + chunk.len());
        assert_eq!(d.line.capacity() + d.data.capacity() + d.event.capacity(), 0, "held memory is released");
        // The rest of the oversized event (more of its line, another data line) is skipped, not
        // held; the event after its blank line is decoded, and the flag stays up.
        d.feed(&chunk, |e| events.push(e.data.to_vec()));
        d.feed(b"\ndata: still the big one\n\r", |e| events.push(e.data.to_vec()));
        assert_eq!(d.line.capacity() + d.data.capacity(), 0);
        d.feed(b"\ndata: {\"b\":2}\n\n", |e| events.push(e.data.to_vec()));
        d.finish(|e| events.push(e.data.to_vec()));
        assert_eq!(events, vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]);
        assert!(d.overflowed());
    }

    #[test]
    fn skipping_finds_the_blank_line_whatever_the_split() {
        let tail = b"more of the line\r\ndata: x\n\r\ndata: after\n\n";
        for cut in 0..=tail.len() {
            for start in [SkipLine::Empty, SkipLine::Text] {
                let (a, b) = tail.split_at(cut);
                let rest = match skip_to_blank_line(start, a) {
                    Ok(rest) => [rest, b].concat(),
                    Err(state) => skip_to_blank_line(state, b).expect("blank line found").to_vec(),
                };
                assert_eq!(rest, b"data: after\n\n", "cut at {cut}");
            }
        }
        assert_eq!(skip_to_blank_line(SkipLine::Empty, b"\ndata: y"), Ok(&b"data: y"[..]));
        assert_eq!(skip_to_blank_line(SkipLine::Text, b"\r"), Err(SkipLine::Text));
    }

    #[test]
    fn comments_are_handed_out_only_when_asked_for() {
        let s = b": keep-alive\n\ndata: a\n:\tinside\r\n\n: OPENROUTER PROCESSING\n\n";
        for cut in 0..=s.len() {
            let mut d = SseDecoder::new();
            let seen = std::cell::RefCell::new(Vec::<Vec<u8>>::new());
            for piece in [&s[..cut], &s[cut..]] {
                d.feed_with_comments(
                    piece,
                    |e| seen.borrow_mut().push(e.data.to_vec()),
                    |c| seen.borrow_mut().push([b"#".as_slice(), c].concat()),
                );
            }
            let seen = seen.into_inner();
            let want: Vec<&[u8]> = vec![b"#: keep-alive", b"#:\tinside", b"a", b"#: OPENROUTER PROCESSING"];
            assert_eq!(seen, want, "cut at {cut}");
        }
        assert_eq!(collect(&[s]), vec![ev(None, "a")]);
    }
}
