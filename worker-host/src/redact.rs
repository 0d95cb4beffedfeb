//! Masking secrets in everything a worker stores: the log (file and tail), the events and
//! the reason of its result (DESIGN §4).
//!
//! A [`Redactor`] is built once per attempt from the order's secret values. For each value
//! of at least [`MIN_SECRET_LEN`] bytes it masks the value itself, each line of a multi-line
//! value, its JSON-escaped and URL-encoded forms, and its base64 (standard and URL-safe
//! alphabets, at each of the three alignments a value can have inside a longer base64
//! text: the characters that depend only on the value). Every occurrence becomes [`MASK`];
//! occurrences that overlap (two secrets sharing bytes in the text) are masked as one.
//!
//! The log is masked as a stream ([`RedactingStream`]) on its way to the spool, so nothing
//! unmasked is ever written. A secret split across two reads is still caught: the stream
//! holds back the shortest end of what it has seen that could still grow into a secret —
//! usually nothing, so lines are not delayed — and releases it with the next chunk or at the
//! end. Bytes of one pipe interleaved with another's inside a secret are not a secret in the
//! merged log and are not masked.

use std::borrow::Cow;
use std::collections::BTreeSet;

use aho_corasick::automaton::Automaton;
use aho_corasick::nfa::contiguous::NFA;
use aho_corasick::{AhoCorasick, AhoCorasickKind, Anchored, MatchKind, Span, packed};
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// What a masked secret becomes.
pub const MASK: &str = "***";
/// Shortest value (and form of a value) that is masked: shorter ones would mask ordinary
/// words and numbers all over the log.
pub const MIN_SECRET_LEN: usize = 6;

/// Characters left as they are by URL encoding (RFC 3986 unreserved).
const URL_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The secrets of one attempt, ready to be masked.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    matcher: Option<Matcher>,
    unmasked: Vec<String>,
}

#[derive(Debug, Clone)]
struct Matcher {
    /// Leftmost-longest search for every form of every secret.
    search: Search,
    /// The same patterns, walked anchored to ask "could these bytes start a secret?".
    prefixes: NFA,
    /// Length of the longest pattern.
    longest: usize,
}

/// Most patterns one packed (SIMD) searcher takes efficiently.
const PACKED_GROUP: usize = 64;

/// How the text is scanned.
#[derive(Debug, Clone)]
enum Search {
    /// SIMD packed searchers (Teddy) over groups of patterns, one scan per group: several
    /// GB/s each, since they skip ordinary text instead of walking it byte by byte.
    Packed(Vec<packed::Searcher>),
    /// An Aho-Corasick DFA, where the CPU has no packed searcher: one table lookup per
    /// byte (about 600 MB/s here), whatever the number of patterns.
    Automaton(AhoCorasick),
}

impl Redactor {
    /// A redactor for `secrets` (name, value). Values shorter than [`MIN_SECRET_LEN`] are
    /// not masked; their names are in [`Redactor::unmasked`] for a warning.
    pub fn new<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut patterns = BTreeSet::new();
        let mut unmasked = Vec::new();
        for (name, value) in secrets {
            if value.len() < MIN_SECRET_LEN {
                if !value.is_empty() {
                    unmasked.push(name.to_owned());
                }
                continue;
            }
            add_forms(&mut patterns, value);
            if value.contains('\n') {
                for line in value.lines() {
                    add_text_forms(&mut patterns, line);
                }
            }
        }
        patterns.retain(|p| p.len() >= MIN_SECRET_LEN);
        unmasked.sort();
        unmasked.dedup();
        let matcher = (!patterns.is_empty()).then(|| Matcher::new(&patterns));
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
        // Whole UTF-8 patterns replaced inside UTF-8 text leave it UTF-8.
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
        let window = buf.len().saturating_sub(matcher.longest - 1);
        let mut hold_from = matcher.could_grow_from(buf, window);
        let mut written = 0;
        for (start, end) in matcher.find_all(buf) {
            if start >= hold_from {
                break;
            }
            out.extend_from_slice(&buf[written..start]);
            out.extend_from_slice(MASK.as_bytes());
            written = end;
            if written > hold_from {
                hold_from = matcher.could_grow_from(buf, written.max(window));
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

impl Matcher {
    fn new(patterns: &BTreeSet<Vec<u8>>) -> Self {
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
        Matcher {
            search: packed.map_or_else(|| automaton(patterns), Search::Packed),
            prefixes: NFA::new(patterns).expect("literal patterns of bounded size build"),
            longest: patterns.iter().map(Vec::len).max().unwrap_or(0),
        }
    }

    /// The bytes of `text` that belong to an occurrence of a pattern, as sorted spans that
    /// do not overlap: every occurrence counts, overlapping ones included, so two secrets
    /// sharing bytes in the text are masked whole, as one span.
    fn find_all(&self, text: &[u8]) -> Vec<(usize, usize)> {
        let mut found: Vec<(usize, usize)> = match &self.search {
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
        };
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

    /// The first position at or after `from` where the rest of `buf` is the beginning of a
    /// pattern (`buf.len()` when there is none).
    fn could_grow_from(&self, buf: &[u8], from: usize) -> usize {
        let start = self
            .prefixes
            .start_state(Anchored::Yes)
            .expect("contiguous NFAs support anchored searches");
        (from..buf.len())
            .find(|&at| {
                let mut state = start;
                buf[at..].iter().all(|&byte| {
                    state = self.prefixes.next_state(Anchored::Yes, state, byte);
                    !self.prefixes.is_dead(state)
                })
            })
            .unwrap_or(buf.len())
    }
}

/// Every form of `value` a log could show.
fn add_forms(patterns: &mut BTreeSet<Vec<u8>>, value: &str) {
    add_text_forms(patterns, value);
    for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
        for offset in 0..3 {
            patterns.insert(base64_core(&engine, value.as_bytes(), offset));
        }
    }
}

/// The value, JSON-escaped and URL-encoded (space as `%20` and as `+`).
fn add_text_forms(patterns: &mut BTreeSet<Vec<u8>>, value: &str) {
    patterns.insert(value.as_bytes().to_vec());
    let json = serde_json::to_string(value).expect("strings serialize");
    patterns.insert(json.as_bytes()[1..json.len() - 1].to_vec());
    let url = utf8_percent_encode(value, URL_UNRESERVED).to_string();
    patterns.insert(url.replace("%20", "+").into_bytes());
    patterns.insert(url.into_bytes());
}

/// The base64 characters that depend only on `value` when it starts `offset` bytes into a
/// 3-byte group of a longer encoded text.
fn base64_core(engine: &impl base64::Engine, value: &[u8], offset: usize) -> Vec<u8> {
    let mut padded = vec![0u8; offset];
    padded.extend_from_slice(value);
    let encoded = engine.encode(&padded);
    let first = (offset * 8).div_ceil(6);
    let last = (padded.len() * 8) / 6;
    encoded.as_bytes()[first..last.max(first)].to_vec()
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
                utf8_percent_encode(SECRET, URL_UNRESERVED)
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
        stream.push(b"progress 10%\rprogress 20%", &mut out);
        assert_eq!(out, b"progress 10%\rprogress 20%");
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
        assert!(matches!(&matcher.search, Search::Packed(groups) if groups.len() > 1));
        let patterns: BTreeSet<Vec<u8>> = secrets
            .iter()
            .flat_map(|(_, v)| {
                let mut set = BTreeSet::new();
                add_forms(&mut set, v);
                set
            })
            .filter(|p| p.len() >= MIN_SECRET_LEN)
            .collect();
        let fallback = Matcher {
            search: automaton(&patterns),
            ..matcher.clone()
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
            let mut points: Vec<usize> = cuts.into_iter().filter(|&c| c <= text.len()).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for p in points {
                chunks.push(&text.as_bytes()[last..p]);
                last = p;
            }
            chunks.push(&text.as_bytes()[last..]);
            prop_assert_eq!(through_stream(&r, &chunks), whole.clone());
            prop_assert!(!whole.contains(SECRET));
        }
    }
}
