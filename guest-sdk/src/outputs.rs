//! Outputs for the orders after this one: values appended to the order's output file
//! (`$SLUICE_OUTPUT`; a WASI module's is `/sluice/output`) in the format Sluice reads —
//! `name=value`, or for a value of several lines `name<<DELIMITER`, its lines, and the
//! delimiter alone on a line (a delimiter none of its lines is).

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::ContextError;

/// The most bytes of an output's name.
pub const MAX_NAME_LEN: usize = 128;

/// Why an output could not be written.
#[derive(Debug)]
pub enum OutputError {
    /// The name is not `[A-Za-z_][A-Za-z0-9_]*` of at most [`MAX_NAME_LEN`] bytes.
    BadName(String),
    /// The value holds a NUL byte, which no variable can.
    Nul,
    /// Appending to the file failed.
    Io(std::io::Error),
}

impl fmt::Display for OutputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutputError::BadName(name) => write!(
                f,
                "output name {name:?} must be 1 to {MAX_NAME_LEN} letters, digits or '_', not starting with a digit"
            ),
            OutputError::Nul => write!(f, "an output's value cannot hold a NUL byte"),
            OutputError::Io(e) => write!(f, "writing the output: {e}"),
        }
    }
}

impl std::error::Error for OutputError {}

/// The order's output file.
#[derive(Debug, Clone)]
pub struct Outputs {
    file: PathBuf,
}

impl Outputs {
    /// The file named by `SLUICE_OUTPUT`.
    ///
    /// # Errors
    ///
    /// [`ContextError`] when the variable is not set (not run by Sluice).
    pub fn from_env() -> Result<Self, ContextError> {
        crate::path_from_env("SLUICE_OUTPUT").map(Outputs::in_file)
    }

    /// Outputs appended to `file` (for tests, or a file chosen elsewhere).
    pub fn in_file(file: impl Into<PathBuf>) -> Self {
        Outputs { file: file.into() }
    }

    /// The file outputs are appended to.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Appends `name` = `value` (a later value of a name replaces an earlier one).
    ///
    /// # Errors
    ///
    /// [`OutputError`] for a bad name, a NUL in the value, or a failed write.
    pub fn set(&self, name: &str, value: &str) -> Result<(), OutputError> {
        let text = entry(name, value)?;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.file)
            .map_err(OutputError::Io)?;
        file.write_all(text.as_bytes()).map_err(OutputError::Io)
    }
}

/// What [`Outputs::set`] appends for `name` = `value`.
///
/// # Errors
///
/// [`OutputError::BadName`] or [`OutputError::Nul`].
pub fn entry(name: &str, value: &str) -> Result<String, OutputError> {
    let mut bytes = name.bytes();
    let first_ok = match bytes.next() {
        Some(b) => b.is_ascii_alphabetic() || b == b'_',
        None => false,
    };
    if !first_ok
        || name.len() > MAX_NAME_LEN
        || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(OutputError::BadName(name.to_owned()));
    }
    if value.contains('\0') {
        return Err(OutputError::Nul);
    }
    if !value.contains('\n') && !value.contains('\r') {
        return Ok(format!("{name}={value}\n"));
    }
    // A delimiter that none of the value's lines is (Sluice ignores a line's last `\r`
    // when it looks for the delimiter).
    let is_line = |delimiter: &str| {
        value
            .split('\n')
            .any(|line| line.strip_suffix('\r').unwrap_or(line) == delimiter)
    };
    let mut delimiter = String::from("SLUICE_EOF");
    let mut n = 0;
    while is_line(&delimiter) {
        n += 1;
        delimiter = format!("SLUICE_EOF_{n}");
    }
    Ok(format!("{name}<<{delimiter}\n{value}\n{delimiter}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_values_are_lines_and_others_blocks() {
        assert_eq!(entry("plan_id", "a=b").unwrap(), "plan_id=a=b\n");
        assert_eq!(entry("empty", "").unwrap(), "empty=\n");
        assert_eq!(
            entry("summary", "one\ntwo\n").unwrap(),
            "summary<<SLUICE_EOF\none\ntwo\n\nSLUICE_EOF\n"
        );
        assert_eq!(
            entry("tricky", "SLUICE_EOF\r\nSLUICE_EOF_1").unwrap(),
            "tricky<<SLUICE_EOF_2\nSLUICE_EOF\r\nSLUICE_EOF_1\nSLUICE_EOF_2\n"
        );
        assert_eq!(
            entry("cr", "a\r").unwrap(),
            "cr<<SLUICE_EOF\na\r\nSLUICE_EOF\n"
        );
    }

    #[test]
    fn bad_names_and_values_are_refused() {
        for name in ["", "1a", "a-b", "a b"] {
            assert!(
                matches!(entry(name, "x"), Err(OutputError::BadName(_))),
                "{name}"
            );
        }
        assert!(entry(&"a".repeat(MAX_NAME_LEN + 1), "x").is_err());
        assert!(matches!(entry("a", "x\0y"), Err(OutputError::Nul)));
    }

    #[test]
    fn values_are_appended() {
        let file =
            std::env::temp_dir().join(format!("sluice-guest-outputs-{}", std::process::id()));
        let _ = std::fs::remove_file(&file);
        let outputs = Outputs::in_file(&file);
        outputs.set("a", "1").unwrap();
        outputs.set("b", "x\ny").unwrap();
        let written = std::fs::read_to_string(&file).unwrap();
        let _ = std::fs::remove_file(&file);
        assert_eq!(written, "a=1\nb<<SLUICE_EOF\nx\ny\nSLUICE_EOF\n");
    }
}
