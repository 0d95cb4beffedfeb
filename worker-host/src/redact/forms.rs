//! Every form a secret's value can take in a log: the encodings tools print values in.
//!
//! A secret is masked in each of these forms (at least [`MIN_SECRET_LEN`] bytes long):
//! - as text: the value itself, reversed and ROT13'd; JSON-escaped the ways common encoders
//!   escape (serde and JavaScript; Python's `ensure_ascii` and Java's `\u00E4` escapes;
//!   Go's HTML-safe `\u003c`; PHP's `\/`); URL-encoded with the safe sets of RFC 3986,
//!   Python's `quote` (`/` kept), JavaScript's `encodeURIComponent` and `encodeURI`, HTML
//!   forms, and every byte, with `%20` or `+` for spaces and upper- or lower-case hex;
//!   HTML-escaped; shell-escaped with backslashes (`printf %q`); as hex with `\x`, space or
//!   colon separators;
//! - encoded: base64 (standard and URL-safe alphabets), base32 and hex (both cases), each
//!   as the characters that depend only on the value at every alignment it can have inside
//!   a longer encoded text (as in an HTTP Basic header).
//!
//! Every form is matched across line breaks as well (see the module above), so base64
//! wrapped at 76 columns, or `xxd -p` at 60, is masked too.
//!
//! [`MIN_SECRET_LEN`]: super::MIN_SECRET_LEN

use std::collections::BTreeSet;

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// RFC 3986 unreserved characters are left alone; everything else is encoded.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// Python's `urllib.parse.quote` (`safe='/'`).
const PYTHON_QUOTE: &AsciiSet = &RFC3986.remove(b'/');
/// JavaScript's `encodeURIComponent`.
const URI_COMPONENT: &AsciiSet = &RFC3986
    .remove(b'!')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');
/// JavaScript's `encodeURI`.
const URI: &AsciiSet = &URI_COMPONENT
    .remove(b';')
    .remove(b',')
    .remove(b'/')
    .remove(b'?')
    .remove(b':')
    .remove(b'@')
    .remove(b'&')
    .remove(b'=')
    .remove(b'+')
    .remove(b'$')
    .remove(b'#');
/// HTML forms (`application/x-www-form-urlencoded`, Java's `URLEncoder`).
const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'*')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_');

/// The patterns that mask a set of secrets.
#[derive(Debug, Default)]
pub(super) struct Forms {
    patterns: BTreeSet<Vec<u8>>,
}

impl Forms {
    /// Adds every form of `value`: as text and encoded.
    pub(super) fn add_value(&mut self, value: &str) {
        self.add_text(value);
        let bytes = value.as_bytes();
        for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
            for offset in 0..3 {
                self.insert(core(bytes, offset, 3, 6, |b| {
                    base64::Engine::encode(&engine, b)
                }));
            }
        }
        for offset in 0..5 {
            self.insert(core(bytes, offset, 5, 5, |b| {
                data_encoding::BASE32_NOPAD.encode(b)
            }));
        }
        self.insert(data_encoding::HEXLOWER.encode(bytes));
        self.insert(data_encoding::HEXUPPER.encode(bytes));
        for separator in ["\\x", " ", ":"] {
            for upper in [false, true] {
                self.insert(separated_hex(bytes, separator, upper));
            }
        }
    }

    /// Adds the forms of `value` as text (see the module docs).
    pub(super) fn add_text(&mut self, value: &str) {
        self.insert(value);
        self.insert(value.chars().rev().collect::<String>());
        self.insert(value.chars().map(rot13).collect::<String>());
        for ascii in [false, true] {
            for html_safe in [false, true] {
                for upper in [false, true] {
                    for slash in [false, true] {
                        self.insert(json_escaped(value, ascii, html_safe, upper, slash));
                    }
                }
            }
        }
        for set in [
            RFC3986,
            PYTHON_QUOTE,
            URI_COMPONENT,
            URI,
            FORM,
            NON_ALPHANUMERIC,
        ] {
            let encoded = utf8_percent_encode(value, set).to_string();
            for spaces in [encoded.clone(), encoded.replace("%20", "+")] {
                self.insert(lower_case_escapes(&spaces));
                self.insert(spaces);
            }
        }
        // Every byte, for encoders that escape even letters and digits.
        let every: String = value.bytes().map(|b| format!("%{b:02X}")).collect();
        self.insert(every.to_ascii_lowercase());
        self.insert(every);
        for (quote, apostrophe) in [
            ("&quot;", "&#39;"),
            ("&quot;", "&#x27;"),
            ("&#34;", "&#39;"),
        ] {
            self.insert(html_escaped(value, quote, apostrophe));
        }
        self.insert(shell_escaped(value));
    }

    /// The patterns at least `min_len` bytes long.
    pub(super) fn into_patterns(mut self, min_len: usize) -> BTreeSet<Vec<u8>> {
        self.patterns.retain(|p| p.len() >= min_len);
        self.patterns
    }

    fn insert(&mut self, pattern: impl Into<Vec<u8>>) {
        self.patterns.insert(pattern.into());
    }
}

/// The characters of an encoding (`group` bytes become whole characters of `bits` each)
/// that depend only on `value` when it starts `offset` bytes into a group of a longer text.
fn core(
    value: &[u8],
    offset: usize,
    group: usize,
    bits: usize,
    encode: impl Fn(&[u8]) -> String,
) -> Vec<u8> {
    debug_assert!(offset < group);
    let mut padded = vec![0u8; offset];
    padded.extend_from_slice(value);
    let encoded = encode(&padded);
    let first = (offset * 8).div_ceil(bits);
    let last = (padded.len() * 8) / bits;
    encoded.as_bytes()[first..last.max(first)].to_vec()
}

/// `value` as hex digits, each byte preceded (`\x`) or separated (` `, `:`) by `separator`.
fn separated_hex(value: &[u8], separator: &str, upper: bool) -> String {
    let digits: Vec<String> = value
        .iter()
        .map(|b| {
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
        })
        .collect();
    if separator == "\\x" {
        digits.iter().map(|d| format!("\\x{d}")).collect()
    } else {
        digits.join(separator)
    }
}

/// `value` inside a JSON string, escaped as one of the common encoders does: `ascii`
/// escapes every non-ASCII character (`\u00e4`, surrogate pairs beyond the BMP),
/// `html_safe` escapes `<`, `>`, `&`, U+2028 and U+2029, `upper` writes hex in upper case,
/// `slash` escapes `/`.
fn json_escaped(value: &str, ascii: bool, html_safe: bool, upper: bool, slash: bool) -> String {
    let unit = |out: &mut String, u: u16| {
        if upper {
            out.push_str(&format!("\\u{u:04X}"));
        } else {
            out.push_str(&format!("\\u{u:04x}"));
        }
    };
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '/' if slash => out.push_str("\\/"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' if html_safe => {
                unit(&mut out, c as u16);
            }
            c if (c as u32) < 0x20 || (ascii && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    unit(&mut out, *u);
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// `value` with percent escapes' hex digits in lower case (`%2f` for `%2F`).
fn lower_case_escapes(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut hex_left = 0;
    for c in encoded.chars() {
        if hex_left > 0 {
            out.push(c.to_ascii_lowercase());
            hex_left -= 1;
        } else {
            if c == '%' {
                hex_left = 2;
            }
            out.push(c);
        }
    }
    out
}

fn html_escaped(value: &str, quote: &str, apostrophe: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str(quote),
            '\'' => out.push_str(apostrophe),
            c => out.push(c),
        }
    }
    out
}

/// `value` with a backslash before each character a shell treats specially, as bash's
/// `printf %q` writes it.
fn shell_escaped(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if " \t\\'\"`$<>()[]{}|&;!?*~#".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn rot13(c: char) -> char {
    match c {
        'a'..='z' => (((c as u8 - b'a') + 13) % 26 + b'a') as char,
        'A'..='Z' => (((c as u8 - b'A') + 13) % 26 + b'A') as char,
        c => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes_follow_the_common_encoders() {
        let value = "ä/<😀\n";
        assert_eq!(json_escaped(value, false, false, false, false), "ä/<😀\\n");
        // Python's json.dumps (ensure_ascii).
        assert_eq!(
            json_escaped(value, true, false, false, false),
            "\\u00e4/<\\ud83d\\ude00\\n"
        );
        // Go's json.Marshal, PHP's json_encode.
        assert_eq!(
            json_escaped(value, false, true, false, false),
            "ä/\\u003c😀\\n"
        );
        assert_eq!(
            json_escaped(value, true, false, true, true),
            "\\u00E4\\/<\\uD83D\\uDE00\\n"
        );
    }

    #[test]
    fn url_forms_cover_the_common_safe_sets_and_cases() {
        let mut forms = Forms::default();
        forms.add_text("a/b c~ä!");
        let patterns = forms.into_patterns(1);
        for expected in [
            "a%2Fb%20c~%C3%A4%21",         // RFC 3986
            "a/b%20c~%C3%A4%21",           // Python's quote
            "a/b%20c~%c3%a4%21",           // … with lower-case hex
            "a%2Fb+c%7E%C3%A4%21",         // HTML forms
            "a%2Fb%20c~%C3%A4!",           // encodeURIComponent
            "%61%2F%62%20%63%7E%C3%A4%21", // every byte
        ] {
            assert!(patterns.contains(expected.as_bytes()), "{expected} missing");
        }
    }

    #[test]
    fn encoded_cores_are_the_characters_that_depend_only_on_the_value() {
        use base64::Engine as _;
        let value = b"secret!";
        for offset in 0..3 {
            let mut text = vec![b'x'; offset];
            text.extend_from_slice(value);
            text.extend_from_slice(b"yy");
            let encoded = base64::engine::general_purpose::STANDARD.encode(&text);
            let pattern = core(value, offset, 3, 6, |b| STANDARD_NO_PAD.encode(b));
            assert!(
                encoded.contains(std::str::from_utf8(&pattern).unwrap()),
                "base64 at {offset}"
            );
        }
        for offset in 0..5 {
            let mut text = vec![b'x'; offset];
            text.extend_from_slice(value);
            let encoded = data_encoding::BASE32.encode(&text);
            let pattern = core(value, offset, 5, 5, |b| {
                data_encoding::BASE32_NOPAD.encode(b)
            });
            assert!(
                encoded.contains(std::str::from_utf8(&pattern).unwrap()),
                "base32 at {offset}"
            );
        }
    }
}
