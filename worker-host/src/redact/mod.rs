//! Masking secrets in everything a worker stores: the log (file and tail), the events and
//! the reason of its result (DESIGN §4).
//!
//! A [`Redactor`] is built once per attempt from the order's secret values. For each value
//! of at least [`MIN_SECRET_LEN`] bytes it masks every form `forms.rs` lists (the value, its
//! escapes and encodings), each line of a multi-line value, and, for a value that is a JSON
//! document, each string in it of at least [`MIN_SECRET_LEN`] bytes with all its forms.
//! Every occurrence becomes [`MASK`]; occurrences that overlap (two secrets sharing bytes
//! in the text) are masked as one.
//!
//! Line breaks do not hide a secret: the text is searched as if it had no CR or LF bytes, so
//! base64 wrapped at 76 columns (`base64`, MIME), hex at 60 (`xxd -p`) or a value folded
//! by a terminal-width tool is found, and its whole span — line breaks included — is masked.
//! Only forms that themselves hold a line break (the whole of a multi-line value) are
//! searched in the text as it is.
//!
//! The log is masked as a stream ([`RedactingStream`]) on its way to the spool, so nothing
//! unmasked is ever written. A secret split across two reads is still caught: the stream
//! holds back the shortest end of what it has seen that could still grow into a secret —
//! usually nothing, so lines are not delayed — and releases it with the next chunk or at the
//! end. Bytes of one pipe interleaved with another's inside a secret are not a secret in the
//! merged log and are not masked.

mod forms;

use std::borrow::Cow;
use std::collections::BTreeSet;

use aho_corasick::automaton::Automaton;
use aho_corasick::nfa::contiguous::NFA;
use aho_corasick::{AhoCorasick, AhoCorasickKind, Anchored, MatchKind, Span, packed};

use forms::Forms;

/// What a masked secret becomes.
pub const MASK: &str = "***";
/// Shortest value (and form of a value) that is masked: shorter ones would mask ordinary
/// words and numbers all over the log.
pub const MIN_SECRET_LEN: usize = 6;

/// The secrets of one attempt, ready to be masked.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    matcher: Option<Matcher>,
    unmasked: Vec<String>,
}

/// Every pattern, in two sets by how the text is searched.
#[derive(Debug, Clone)]
struct Matcher {
    /// Patterns without line breaks, searched with the text's line breaks skipped.
    unwrapped: Option<PatternSet>,
    /// Patterns holding a line break, searched in the text as it is.
    literal: Option<PatternSet>,
}

#[derive(Debug, Clone)]
struct PatternSet {
    /// Leftmost-longest search for every pattern.
    search: Search,
    /// The same patterns, walked anchored to ask "could these bytes start a secret?".
    prefixes: NFA,
    /// Length of the longest pattern.
    longest: usize,
    /// Whether CR and LF in the text are skipped (see the module docs).
    skips_line_breaks: bool,
}

/// Most line-break bytes in a row inside a wrapped form (CR LF).
const MAX_BREAK_RUN: usize = 2;

/// Most patterns one packed (SIMD) searcher takes efficiently.
const PACKED_GROUP: usize = 64;

/// How the text is scanned.
#[derive(Debug, Clone)]
enum Search {
    /// SIMD packed searchers (Teddy) over groups of patterns, one scan per group: several
    /// GB/s each, since they skip ordinary text instead of walking it byte by byte.
    Packed(Vec<packed::Searcher>),
    /// An Aho-Corasick automaton, where the CPU has no packed searcher: one table lookup
    /// per byte, whatever the number of patterns.
    Automaton(AhoCorasick),
}

impl Redactor {
    /// A redactor for `secrets` (name, value). Values shorter than [`MIN_SECRET_LEN`] are
    /// not masked; their names are in [`Redactor::unmasked`] for a warning.
    pub fn new<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut forms = Forms::default();
        let mut unmasked = Vec::new();
        for (name, value) in secrets {
            if value.len() < MIN_SECRET_LEN {
                if !value.is_empty() {
                    unmasked.push(name.to_owned());
                }
                continue;
            }
            forms.add_value(value);
            if value.contains('\n') {
                for line in value.lines() {
                    forms.add_text(line);
                }
            }
            for leaf in json_strings(value) {
                if leaf.len() >= MIN_SECRET_LEN {
                    forms.add_value(&leaf);
                }
            }
        }
        unmasked.sort();
        unmasked.dedup();
        let patterns = forms.into_patterns(MIN_SECRET_LEN);
        let matcher = (!patterns.is_empty()).then(|| Matcher::new(patterns));
        Redactor { matcher, unmasked }
    }

    /// Names of secrets too short to be masked.
    pub fn unmasked(&self) -> &[String] {
        &self.unmasked
    }

    /// `text` with every secret masked.
    pub fn redact_str<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let Some(matcher) = &self.matcher else {
            return Cow::Borrowed(text);
        };
        let found = matcher.find_all(text.as_bytes());
        if found.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut out = Vec::with_capacity(text.len());
        mask_into(text.as_bytes(), &found, &mut out);
        // Whole UTF-8 patterns (and the line breaks between their parts) replaced inside
        // UTF-8 text leave it UTF-8.
        Cow::Owned(String::from_utf8_lossy(&out).into_owned())
    }

    /// A stream masking secrets in the bytes pushed through it.
    pub fn stream(&self) -> RedactingStream<'_> {
        RedactingStream {
            redactor: self,
            held: Vec::new(),
        }
    }
}

/// The strings inside `value` when it is a JSON document (an object or an array): a secret
/// stored as JSON (a Secrets Manager entry) is printed a field at a time.
fn json_strings(value: &str) -> Vec<String> {
    fn collect(value: serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::String(text) => out.push(text),
            serde_json::Value::Array(items) => items.into_iter().for_each(|v| collect(v, out)),
            serde_json::Value::Object(fields) => {
                fields.into_iter().for_each(|(_, v)| collect(v, out))
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if value.trim_start().starts_with(['{', '['])
        && let Ok(document) = serde_json::from_str(value)
    {
        collect(document, &mut out);
    }
    out
}

/// Masks secrets in a byte stream fed in chunks of any size.
#[derive(Debug)]
pub struct RedactingStream<'r> {
    redactor: &'r Redactor,
    /// The end of the stream so far that could still grow into a secret.
    held: Vec<u8>,
}

impl RedactingStream<'_> {
    /// Appends to `out` the masked bytes of `chunk` that are final; the rest is held until
    /// the next chunk shows whether it is a secret.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let Some(matcher) = &self.redactor.matcher else {
            out.extend_from_slice(chunk);
            return;
        };
        let joined;
        let buf: &[u8] = if self.held.is_empty() {
            chunk
        } else {
            self.held.extend_from_slice(chunk);
            joined = std::mem::take(&mut self.held);
            &joined
        };
        let mut hold_from = matcher.hold_from(buf, 0);
        let mut written = 0;
        for (start, end) in matcher.find_all(buf) {
            if start >= hold_from {
                break;
            }
            // A longer occurrence starting inside this one could still run past the end:
            // decide the whole span with the next chunk.
            if matcher.hold_from(buf, start + 1) < end {
                hold_from = start;
                break;
            }
            out.extend_from_slice(&buf[written..start]);
            out.extend_from_slice(MASK.as_bytes());
            written = end;
            if written > hold_from {
                hold_from = matcher.hold_from(buf, written);
            }
        }
        out.extend_from_slice(&buf[written..hold_from]);
        self.held = buf[hold_from..].to_vec();
    }

    /// Appends what is still held, masked: the stream has ended.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let held = std::mem::take(&mut self.held);
        match &self.redactor.matcher {
            Some(matcher) => mask_into(&held, &matcher.find_all(&held), out),
            None => out.extend_from_slice(&held),
        }
    }
}

/// `text` with the spans in `found` (sorted, not overlapping) replaced by [`MASK`].
fn mask_into(text: &[u8], found: &[(usize, usize)], out: &mut Vec<u8>) {
    let mut written = 0;
    for &(start, end) in found {
        out.extend_from_slice(&text[written..start]);
        out.extend_from_slice(MASK.as_bytes());
        written = end;
    }
    out.extend_from_slice(&text[written..]);
}

fn is_line_break(byte: u8) -> bool {
    byte == b'\n' || byte == b'\r'
}

impl Matcher {
    fn new(patterns: BTreeSet<Vec<u8>>) -> Self {
        let (literal, unwrapped): (BTreeSet<_>, BTreeSet<_>) = patterns
            .into_iter()
            .partition(|p| p.iter().copied().any(is_line_break));
        Matcher {
            unwrapped: (!unwrapped.is_empty()).then(|| PatternSet::new(&unwrapped, true)),
            literal: (!literal.is_empty()).then(|| PatternSet::new(&literal, false)),
        }
    }

    fn sets(&self) -> impl Iterator<Item = &PatternSet> {
        self.unwrapped.iter().chain(self.literal.iter())
    }

    /// The bytes of `text` that belong to an occurrence of a pattern, as sorted spans that
    /// do not overlap: every occurrence counts, overlapping ones included, so two secrets
    /// sharing bytes in the text are masked whole, as one span.
    fn find_all(&self, text: &[u8]) -> Vec<(usize, usize)> {
        let mut found: Vec<(usize, usize)> =
            self.sets().flat_map(|set| set.find_all(text)).collect();
        found.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(found.len());
        for (start, end) in found {
            match merged.last_mut() {
                Some(last) if start < last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        merged
    }

    /// The first position at or after `from` where the rest of `buf` could still grow into
    /// an occurrence (`buf.len()` when there is none).
    fn hold_from(&self, buf: &[u8], from: usize) -> usize {
        self.sets()
            .map(|set| set.hold_from(buf, from))
            .min()
            .unwrap_or(buf.len())
    }
}

impl PatternSet {
    fn new(patterns: &BTreeSet<Vec<u8>>, skips_line_breaks: bool) -> Self {
        let packed: Option<Vec<packed::Searcher>> = patterns
            .iter()
            .collect::<Vec<_>>()
            .chunks(PACKED_GROUP)
            .map(|group| {
                packed::Config::new()
                    .match_kind(packed::MatchKind::LeftmostLongest)
                    .builder()
                    .extend(group)
                    .build()
            })
            .collect();
        PatternSet {
            search: packed.map_or_else(|| automaton(patterns), Search::Packed),
            prefixes: NFA::new(patterns).expect("literal patterns of bounded size build"),
            longest: patterns.iter().map(Vec::len).max().unwrap_or(0),
            skips_line_breaks,
        }
    }

    /// Every occurrence in `text`, as spans of `text` (overlapping ones included).
    fn find_all(&self, text: &[u8]) -> Vec<(usize, usize)> {
        if !self.skips_line_breaks {
            return self.search.find_all(text);
        }
        // Search the text without its line breaks, then map the spans back: `removed`
        // holds, in order, the positions (in `text`) of the bytes left out.
        let removed: Vec<usize> = memchr::memchr2_iter(b'\n', b'\r', text).collect();
        if removed.is_empty() {
            return self.search.find_all(text);
        }
        let mut view = Vec::with_capacity(text.len() - removed.len());
        let mut kept_from = 0;
        for &at in &removed {
            view.extend_from_slice(&text[kept_from..at]);
            kept_from = at + 1;
        }
        view.extend_from_slice(&text[kept_from..]);
        // `removed[i] - i` never decreases: how many removed bytes precede the view's byte
        // `index` is how many of these are at most `index`.
        let shifted: Vec<usize> = removed.iter().enumerate().map(|(i, r)| r - i).collect();
        let original = |index: usize| index + shifted.partition_point(|&s| s <= index);
        self.search
            .find_all(&view)
            .into_iter()
            .map(|(start, end)| (original(start), original(end - 1) + 1))
            .filter(|&(start, end)| {
                // A wrapped form has one line break (CR LF at most) between two of its
                // characters, never blank lines.
                let inside = &removed[removed.partition_point(|&r| r < start)
                    ..removed.partition_point(|&r| r < end)];
                !inside
                    .windows(MAX_BREAK_RUN + 1)
                    .any(|run| run[MAX_BREAK_RUN] - run[0] == MAX_BREAK_RUN)
            })
            .collect()
    }

    /// The first position at or after `from` (and close enough to the end for a pattern to
    /// reach past it) where the rest of `buf` is the beginning of a pattern.
    fn hold_from(&self, buf: &[u8], from: usize) -> usize {
        let start = self
            .prefixes
            .start_state(Anchored::Yes)
            .expect("contiguous NFAs support anchored searches");
        let counted = |b: &u8| !(self.skips_line_breaks && is_line_break(*b));
        // Where the last `longest - 1` counted bytes begin (each with at most a line break
        // before it): no earlier start can still grow.
        let mut window = buf.len();
        let mut left = self.longest.saturating_sub(1);
        let floor = buf
            .len()
            .saturating_sub(self.longest.saturating_mul(MAX_BREAK_RUN + 1));
        while window > floor && left > 0 {
            window -= 1;
            if counted(&buf[window]) {
                left -= 1;
            }
        }
        (from.max(window)..buf.len())
            .filter(|&at| counted(&buf[at]))
            .find(|&at| {
                let mut state = start;
                let mut breaks = 0;
                buf[at..].iter().all(|&byte| {
                    if !counted(&byte) {
                        breaks += 1;
                        return breaks <= MAX_BREAK_RUN;
                    }
                    breaks = 0;
                    state = self.prefixes.next_state(Anchored::Yes, state, byte);
                    !self.prefixes.is_dead(state)
                })
            })
            .unwrap_or(buf.len())
    }
}

impl Search {
    fn find_all(&self, text: &[u8]) -> Vec<(usize, usize)> {
        match self {
            Search::Automaton(ac) => ac
                .find_overlapping_iter(text)
                .map(|m| (m.start(), m.end()))
                .collect(),
            Search::Packed(searchers) => {
                let mut found = Vec::new();
                for searcher in searchers {
                    // The longest occurrence at each start, then on from the next byte.
                    let mut at = 0;
                    while let Some(m) = searcher.find_in(text, Span::from(at..text.len())) {
                        found.push((m.start(), m.end()));
                        at = m.start() + 1;
                    }
                }
                found
            }
        }
    }
}

/// The automaton search, for CPUs without packed searchers (standard semantics, so that
/// overlapping occurrences are all reported).
fn automaton(patterns: &BTreeSet<Vec<u8>>) -> Search {
    Search::Automaton(
        AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(patterns)
            .expect("literal patterns of bounded size build"),
    )
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use proptest::prelude::*;

    use super::*;

    const SECRET: &str = "s3cr3t-Pa55word!";

    fn redactor() -> Redactor {
        Redactor::new([("DB_PASSWORD", SECRET), ("PIN", "1234")])
    }

    /// `text` cut at each of `cuts` that falls inside it.
    fn cut(text: &[u8], cuts: Vec<usize>) -> Vec<&[u8]> {
        let mut points: Vec<usize> = cuts.into_iter().filter(|&c| c <= text.len()).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut last = 0;
        for p in points {
            chunks.push(&text[last..p]);
            last = p;
        }
        chunks.push(&text[last..]);
        chunks
    }

    fn through_stream(redactor: &Redactor, chunks: &[&[u8]]) -> String {
        let mut stream = redactor.stream();
        let mut out = Vec::new();
        for chunk in chunks {
            stream.push(chunk, &mut out);
        }
        stream.finish(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_form_of_a_secret_is_masked_and_the_rest_is_kept() {
        let r = redactor();
        let cases = [
            format!("password={SECRET} ok"),
            format!("json: {}", serde_json::to_string(SECRET).unwrap()),
            format!(
                "url: https://x/?p={}",
                percent_encoding::utf8_percent_encode(SECRET, percent_encoding::NON_ALPHANUMERIC)
            ),
            format!("b64: {}", STANDARD.encode(SECRET)),
            format!("b64 at 1: {}", STANDARD.encode(format!("x{SECRET}y"))),
            format!("b64 at 2: {}", STANDARD.encode(format!("xy{SECRET}zz"))),
            format!("basic auth: {}", STANDARD.encode(format!("user:{SECRET}"))),
        ];
        for line in cases {
            let masked = r.redact_str(&line);
            assert!(masked.contains(MASK), "{line} → {masked}");
            assert!(!masked.contains(SECRET), "{masked}");
            assert!(masked.starts_with(&line[..4]), "the rest is kept: {masked}");
        }
        assert_eq!(r.redact_str("nothing secret here"), "nothing secret here");
        assert_eq!(r.unmasked(), ["PIN"]);
        assert_eq!(
            r.redact_str("pin 1234"),
            "pin 1234",
            "short values are not masked"
        );
    }

    #[test]
    fn multi_line_values_are_masked_whole_and_line_by_line() {
        let key = "-----BEGIN KEY-----\nMIIEowIBAAKCAQEA7\n-----END KEY-----\n";
        let r = Redactor::new([("DEPLOY_KEY", key)]);
        assert_eq!(r.redact_str(&format!("key:\n{key}done")), "key:\n***done");
        assert_eq!(
            r.redact_str("line MIIEowIBAAKCAQEA7 alone"),
            "line *** alone"
        );
        let escaped = serde_json::to_string(key).unwrap();
        assert_eq!(r.redact_str(&escaped), "\"***\"");
    }

    #[test]
    fn a_secret_split_across_chunks_is_caught_and_nothing_else_waits() {
        let r = redactor();
        let text = format!("a {SECRET} b\n");
        for cut in 0..text.len() {
            let (head, tail) = text.as_bytes().split_at(cut);
            assert_eq!(
                through_stream(&r, &[head, tail]),
                "a *** b\n",
                "cut at {cut}"
            );
        }
        // A chunk that cannot start a secret is passed on whole, at once.
        let mut stream = r.stream();
        let mut out = Vec::new();
        stream.push(b"progress 10%\rprogress 20% done", &mut out);
        assert_eq!(out, b"progress 10%\rprogress 20% done");
        // One that might is held until the next chunk decides.
        out.clear();
        stream.push(b" s3cr", &mut out);
        assert_eq!(out, b" ");
        stream.push(b"ets are fun", &mut out);
        assert_eq!(out, b" s3crets are fun");
    }

    #[test]
    fn the_longest_secret_wins_when_one_contains_another() {
        let r = Redactor::new([("A", "abcdef"), ("B", "abcdefghij")]);
        assert_eq!(through_stream(&r, &[b"x abcdef", b"ghij y"]), "x *** y");
        assert_eq!(through_stream(&r, &[b"x abcdef", b"gh y"]), "x ***gh y");
    }

    #[test]
    fn secrets_overlapping_in_the_text_are_masked_whole() {
        let r = Redactor::new([("A", "abcdefgh"), ("B", "efghijkl")]);
        assert_eq!(r.redact_str("x abcdefghijkl y"), "x *** y");
        assert_eq!(through_stream(&r, &[b"x abcde", b"fghijkl y"]), "x *** y");
    }

    #[test]
    fn a_longer_secret_starting_inside_a_masked_one_is_caught_across_chunks() {
        // Leaked `***789-secret-tail` before: the second secret, starting inside the
        // first, was cut off at the chunk's end once the first was masked.
        let r = Redactor::new([("A", "api-key-123456"), ("B", "123456789-secret-tail")]);
        assert_eq!(
            through_stream(&r, &[b"x api-key-123456789-se", b"cret-tail y"]),
            "x *** y"
        );
    }

    #[test]
    fn blank_lines_hold_nothing_back() {
        // One byte that could start a secret, then endless empty lines: held without
        // bound before (quadratic work, unbounded memory).
        let r = redactor();
        let mut stream = r.stream();
        let mut out = Vec::new();
        stream.push(b"s", &mut out);
        for _ in 0..1000 {
            stream.push(b"\n\n\n\n", &mut out);
        }
        assert!(out.len() >= 3990, "{} bytes out", out.len());
        assert!(stream.held.len() < 100, "{} bytes held", stream.held.len());
    }

    #[test]
    fn a_wrapped_form_is_masked_line_breaks_included() {
        let r = redactor();
        let b64 = STANDARD.encode(SECRET);
        let (head, tail) = b64.split_at(7);
        // The last characters depend on the padding too: they stay.
        for text in [format!("{head}\n{tail}\n"), format!("{head}\r\n{tail}")] {
            let masked = r.redact_str(&text);
            assert!(masked.starts_with("***") && masked.len() < 10, "{masked:?}");
        }
        // Separated by blank lines, the parts are no longer one encoded text.
        let apart = format!("{head}\n\n\n{tail}");
        assert_eq!(r.redact_str(&apart), apart);
    }

    #[test]
    fn without_secrets_bytes_pass_untouched() {
        let r = Redactor::new([]);
        let bytes: Vec<u8> = (0..=255).collect();
        let mut out = Vec::new();
        r.stream().push(&bytes, &mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    fn the_automaton_finds_what_the_packed_searchers_find() {
        // 30 secrets make more patterns than one packed searcher takes.
        let secrets: Vec<(String, String)> = (0..30)
            .map(|i| (format!("S{i}"), format!("secret-{i:02}-{}", "x".repeat(i))))
            .collect();
        let packed = Redactor::new(secrets.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let matcher = packed.matcher.clone().unwrap();
        let set = matcher.unwrapped.clone().unwrap();
        assert!(matches!(&set.search, Search::Packed(groups) if groups.len() > 1));
        let mut forms = Forms::default();
        for (_, v) in &secrets {
            forms.add_value(v);
        }
        let patterns = forms.into_patterns(MIN_SECRET_LEN);
        let fallback = Matcher {
            unwrapped: Some(PatternSet {
                search: automaton(&patterns),
                ..set
            }),
            literal: None,
        };
        let text: String = secrets
            .iter()
            .map(|(_, v)| format!("a {v} b {} c ", STANDARD.encode(v)))
            .collect();
        let found = matcher.find_all(text.as_bytes());
        assert_eq!(found.len(), 60);
        assert_eq!(fallback.find_all(text.as_bytes()), found);
    }

    proptest! {
        #[test]
        fn chunking_never_changes_the_result(
            noise in proptest::collection::vec(
                prop_oneof![Just("s3cr3t-Pa55word!"), Just("s3cr"), Just("abc\n"), Just("x"), Just("czNjcjN0LVBhNTV3b3JkIQ")],
                0..30,
            ),
            cuts in proptest::collection::vec(0usize..400, 0..8),
        ) {
            let text: String = noise.concat();
            let r = redactor();
            let whole = through_stream(&r, &[text.as_bytes()]);
            let chunks = cut(text.as_bytes(), cuts);
            prop_assert_eq!(through_stream(&r, &chunks), whole.clone());
            prop_assert!(!whole.contains(SECRET));
        }
    }

    const PYTHON_SAFE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');

    /// Percent escapes in lower case, as `%2f`.
    fn lower_hex(encoded: String) -> String {
        let mut parts = encoded.split('%');
        let mut out = parts.next().unwrap_or_default().to_owned();
        for part in parts {
            out.push('%');
            let (hex, rest) = part.split_at(2.min(part.len()));
            out.push_str(&hex.to_lowercase());
            out.push_str(rest);
        }
        out
    }

    /// `text` as a program would print it in `encoding` (independent of [`forms`]), and
    /// whether the encoding's ends depend on what surrounds the value.
    fn encode(encoding: usize, context: &str, secret: &str) -> (String, bool) {
        use data_encoding::{BASE32, HEXLOWER, HEXUPPER};
        use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
        let wrap = |text: String, width: usize| -> String {
            let chars: Vec<char> = text.chars().collect();
            chars
                .chunks(width)
                .map(|c| c.iter().collect::<String>())
                .collect::<Vec<_>>()
                .join("\n")
        };
        let framed = format!("{context}{secret}");
        match encoding {
            0 => (secret.to_owned(), false),
            1 => (serde_json::to_string(secret).unwrap(), false),
            2 => {
                // Python's json.dumps: non-ASCII as lower-case \u escapes.
                let mut out = String::new();
                for c in secret.chars() {
                    if c.is_ascii() {
                        let one = serde_json::to_string(&c.to_string()).unwrap();
                        out.push_str(&one[1..one.len() - 1]);
                    } else {
                        for unit in c.encode_utf16(&mut [0; 2]) {
                            out.push_str(&format!("\\u{unit:04x}"));
                        }
                    }
                }
                (out, false)
            }
            3 => (
                utf8_percent_encode(secret, NON_ALPHANUMERIC).to_string(),
                false,
            ),
            4 => (
                lower_hex(utf8_percent_encode(secret, NON_ALPHANUMERIC).to_string()),
                false,
            ),
            5 => (
                lower_hex(utf8_percent_encode(secret, PYTHON_SAFE).to_string()),
                false,
            ),
            6 => (wrap(STANDARD.encode(&framed), 76), true),
            7 => (
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&framed),
                true,
            ),
            8 => (wrap(HEXLOWER.encode(secret.as_bytes()), 60), false),
            9 => (HEXUPPER.encode(secret.as_bytes()), false),
            10 => (wrap(BASE32.encode(framed.as_bytes()), 76), true),
            _ => unreachable!(),
        }
    }

    proptest! {
        #[test]
        fn every_encoding_of_a_random_secret_is_masked_however_it_is_written(
            secret in "[ -~äé€😀]{6,40}",
            encoding in 0usize..11,
            context in "x{0,4}",
            as_json_document in any::<bool>(),
            cuts in proptest::collection::vec(0usize..2000, 0..10),
        ) {
            // A secret stored as a JSON document is masked by each of its strings.
            let registered = if as_json_document {
                serde_json::json!({"user": "u", "password": secret}).to_string()
            } else {
                secret.clone()
            };
            let r = Redactor::new([("SECRET", registered.as_str())]);
            let (encoded, context_dependent) = encode(encoding, &context, &secret);
            let text = format!("before {encoded} after\n");
            let chunks = cut(text.as_bytes(), cuts);
            let out = through_stream(&r, &chunks);
            let unwrapped: String = out.chars().filter(|c| *c != '\n' && *c != '\r').collect();
            let plain: String = encoded.chars().filter(|c| *c != '\n').collect();
            // Characters next to the context, or to the padding, depend on them.
            let must_be_gone = if context_dependent {
                plain.trim_end_matches('=').chars().skip(3).collect::<Vec<_>>()
            } else {
                plain.chars().collect()
            };
            let kept = must_be_gone.len().saturating_sub(if context_dependent { 3 } else { 0 });
            let core: String = must_be_gone[..kept].iter().collect();
            prop_assert!(out.contains(MASK), "{:?} → {:?}", text, out);
            prop_assert!(
                core.len() < MIN_SECRET_LEN || !unwrapped.contains(&core),
                "{:?} survived in {:?}", core, out
            );
            prop_assert!(!out.contains(&secret), "{:?}", out);
        }
    }
}
