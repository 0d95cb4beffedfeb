//! Outputs an order publishes for the orders after it, and the inputs that take them.
//!
//! A shell order appends to the file named by `$SLUICE_OUTPUT` (a WebAssembly order writes
//! `/sluice/output`) in GitHub Actions' format: `name=value` lines, or a `name<<DELIMITER`
//! line, the value's lines, and a line holding `DELIMITER` alone. The worker reads the file
//! once the order has ended ([`parse_outputs`], at most [`MAX_OUTPUT_BYTES`]) and stores
//! what it read for the run's later orders as [`PublishedOutputs`]. An order takes a value
//! with `"inputs": {"ENV_NAME": "<order>.<name>"}`, naming one of its ancestors; its worker
//! reads that order's published outputs and sets the variable before anything runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::OrderNum;
use crate::result::bounded;

/// The variable naming the file a shell order writes its outputs to.
pub const OUTPUT_VAR: &str = "SLUICE_OUTPUT";
/// Where a WebAssembly order writes its outputs.
pub const WASM_OUTPUT_PATH: &str = "/sluice/output";
/// The most bytes an order's output file may hold.
pub const MAX_OUTPUT_BYTES: u64 = 1 << 20;
/// The largest published-outputs document a reader accepts: [`MAX_OUTPUT_BYTES`] of names
/// and values once JSON-escaped (at most six bytes each, `\u0001`), and the list of secret
/// ones.
pub const MAX_PUBLISHED_BYTES: u64 = 8 * MAX_OUTPUT_BYTES;
/// The most inputs an order may take.
pub const MAX_INPUTS: usize = 64;
/// The most bytes of an output's name.
pub const MAX_NAME_BYTES: usize = 128;

/// Whether `name` may name an output: `[A-Za-z_][A-Za-z0-9_]*`, at most
/// [`MAX_NAME_BYTES`].
pub fn is_output_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= MAX_NAME_BYTES
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Why an order's output file cannot be read; the order fails with this as its reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OutputsError {
    /// More than [`MAX_OUTPUT_BYTES`].
    #[error("the output file holds more than the {max} bytes an order may publish", max = MAX_OUTPUT_BYTES)]
    TooLarge,
    /// Not UTF-8 text.
    #[error("the output file is not UTF-8 text (byte {at})")]
    NotText {
        /// The offset of the first byte that is not.
        at: usize,
    },
    /// A line that is neither `name=value` nor `name<<DELIMITER`, a bad name, a block
    /// without its closing delimiter.
    #[error("the output file's line {line}: {message}")]
    Line {
        /// The line, from 1.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Reads an output file in GitHub Actions' format (see the module docs): empty lines are
/// skipped, a later value of a name replaces an earlier one, and a block's value is its
/// lines joined by `\n` (without a last newline), each as written. A `\r` ending a
/// `name=value` line, a block's first line or its closing delimiter is not part of them (a
/// file written on Windows), and a leading byte order mark is skipped.
///
/// # Errors
///
/// An [`OutputsError`] saying what is wrong and on which line.
pub fn parse_outputs(bytes: &[u8]) -> Result<BTreeMap<String, String>, OutputsError> {
    if bytes.len() as u64 > MAX_OUTPUT_BYTES {
        return Err(OutputsError::TooLarge);
    }
    let text = std::str::from_utf8(bytes).map_err(|e| OutputsError::NotText {
        at: e.valid_up_to(),
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text
        .split('\n')
        .enumerate()
        .map(|(index, line)| (index + 1, line));

    let mut outputs = BTreeMap::new();
    while let Some((number, line)) = lines.next() {
        let line = without_cr(line);
        if line.is_empty() {
            continue;
        }
        let error = |message: String| OutputsError::Line {
            line: number,
            message,
        };
        let equals = line.find('=');
        let heredoc = line.find("<<");
        let (name, value) = match (equals, heredoc) {
            (Some(at), None) => (&line[..at], line[at + 1..].to_owned()),
            (Some(at), Some(block)) if at < block => (&line[..at], line[at + 1..].to_owned()),
            (_, Some(block)) => {
                let delimiter = &line[block + 2..];
                if delimiter.is_empty() {
                    return Err(error("`name<<DELIMITER` without a delimiter".to_owned()));
                }
                let mut value: Vec<&str> = Vec::new();
                let closed = loop {
                    match lines.next() {
                        Some((_, l)) if without_cr(l) == delimiter => break true,
                        Some((_, l)) => value.push(l),
                        None => break false,
                    }
                };
                if !closed {
                    return Err(error(format!(
                        "no line {:?} closes the value begun here",
                        bounded(delimiter, MAX_NAME_BYTES)
                    )));
                }
                (&line[..block], value.join("\n"))
            }
            (None, None) => {
                return Err(error(
                    "neither `name=value` nor `name<<DELIMITER`".to_owned(),
                ));
            }
        };
        if !is_output_name(name) {
            return Err(error(format!(
                "{:?} is not an output name (letters, digits and `_`, not starting with a digit, at most {MAX_NAME_BYTES} bytes)",
                bounded(name, MAX_NAME_BYTES)
            )));
        }
        if value.contains('\0') {
            return Err(error(format!("the value of {name} contains a NUL byte")));
        }
        outputs.insert(name.to_owned(), value);
    }
    Ok(outputs)
}

/// A line without the `\r` of a Windows line end.
fn without_cr(line: &str) -> &str {
    line.strip_suffix('\r').unwrap_or(line)
}

/// What a worker stores of an order's outputs ([`crate::keys::outputs`]), for the run's
/// later orders and its done document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedOutputs {
    /// Each output's value.
    pub outputs: BTreeMap<String, String>,
    /// The outputs whose value holds one of the order's secrets: withheld from the done
    /// document, and masked in the logs of the orders that take them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret: Vec<String>,
}

/// Reads a published-outputs document.
///
/// # Errors
///
/// Why it is not one (too large, not JSON of that shape).
pub fn parse_published(bytes: &[u8]) -> Result<PublishedOutputs, String> {
    if bytes.len() as u64 > MAX_PUBLISHED_BYTES {
        return Err(format!(
            "{} bytes, more than the {MAX_PUBLISHED_BYTES} published outputs can be",
            bytes.len()
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// One input of an order, resolved by validation: the variable `env` is set to the output
/// `output` of order `order_num` (written `source` in the job, `plan.plan_file`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    /// The variable the order sees.
    pub env: String,
    /// The reference as the job wrote it (`<order>.<name>`), for messages.
    pub source: String,
    /// The order that publishes it (an ancestor).
    pub order_num: OrderNum,
    /// The output's name.
    pub output: String,
}

/// The reason of an order whose input was not published.
pub fn missing_input(source: &str) -> String {
    format!("missing input: {source}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> BTreeMap<String, String> {
        parse_outputs(text.as_bytes()).unwrap()
    }

    #[test]
    fn lines_and_blocks_are_read_in_githubs_format() {
        let outputs = parsed(
            "\u{feff}plan_file=plan.out\r\n\nsummary<<EOF\r\nline one\r\nline = two\n\nEOF\r\nempty=\nplan_file=second\nx=a<<b\n",
        );
        assert_eq!(outputs["plan_file"], "second", "a later value replaces");
        // A block's lines as written; Windows line ends around them are not the value's.
        assert_eq!(outputs["summary"], "line one\r\nline = two\n");
        assert_eq!(outputs["empty"], "");
        assert_eq!(outputs["x"], "a<<b", "`=` before `<<` is a plain line");
        assert_eq!(parsed("").len(), 0);
    }

    #[test]
    fn bad_files_say_which_line_and_why() {
        let error = |text: &str| parse_outputs(text.as_bytes()).unwrap_err().to_string();
        assert!(error("ok=1\njust words\n").contains("line 2: neither"));
        assert!(error("a<<EOF\nnever closed\n").contains("line 1: no line \"EOF\" closes"));
        assert!(error("1abc=x").contains("line 1: \"1abc\" is not an output name"));
        assert!(error("=x").contains("\"\" is not an output name"));
        assert!(error("a-b=x").contains("is not an output name"));
        assert!(error("a<<\n").contains("without a delimiter"));
        assert!(error("a=b\0c").contains("NUL"));
        // What the order wrote is cut in the message, which becomes the order's reason.
        let long = error(&format!("{}=1", "x-".repeat(100_000)));
        assert!(
            long.len() < 400 && long.contains("…\" is not an output name"),
            "{long}"
        );
        let long = error(&format!("a<<{}\n", "D".repeat(100_000)));
        assert!(long.len() < 400, "{long}");
        assert_eq!(
            parse_outputs(b"a=\xff"),
            Err(OutputsError::NotText { at: 2 })
        );
        let big = vec![b'a'; MAX_OUTPUT_BYTES as usize + 1];
        assert_eq!(parse_outputs(&big), Err(OutputsError::TooLarge));
        let mut exactly = b"a=".to_vec();
        exactly.resize(MAX_OUTPUT_BYTES as usize, b'x');
        assert_eq!(
            parse_outputs(&exactly).unwrap()["a"].len(),
            exactly.len() - 2
        );
    }

    proptest::proptest! {
        /// What the guest SDK writes reads back as it was given: any text without NUL,
        /// lines and line ends of every kind, delimiters among them.
        #[test]
        fn what_the_guest_sdk_writes_reads_back(
            values in proptest::collection::vec(
                "(SLUICE_EOF(_[0-9])?|[a-z=<]{0,3}|\r|\n|\r\n| ){0,12}",
                1..4,
            )
        ) {
            let mut file = String::new();
            for (i, value) in values.iter().enumerate() {
                file.push_str(&sluice_guest::output_entry(&format!("v{i}"), value).unwrap());
            }
            let read = parse_outputs(file.as_bytes()).unwrap();
            for (i, value) in values.iter().enumerate() {
                proptest::prop_assert_eq!(&read[&format!("v{i}")], value);
            }
        }
    }

    #[test]
    fn names_are_identifiers() {
        for good in ["a", "_", "A_1", "plan_file"] {
            assert!(is_output_name(good), "{good}");
        }
        for bad in ["", "1a", "a.b", "a b", "é", &"a".repeat(MAX_NAME_BYTES + 1)] {
            assert!(!is_output_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_largest_file_fits_a_published_document() {
        let mut worst = b"a=".to_vec();
        worst.resize(MAX_OUTPUT_BYTES as usize, 1);
        let published = PublishedOutputs {
            outputs: parse_outputs(&worst).unwrap(),
            secret: vec!["a".to_owned()],
        };
        let bytes = serde_json::to_vec(&published).unwrap();
        assert!(bytes.len() as u64 <= MAX_PUBLISHED_BYTES);
        assert_eq!(parse_published(&bytes).unwrap(), published);
    }
}
