//! [`SecretsFile`]: the local engine's credential store, a JSON file mapping credential
//! locations to what SSM or Secrets Manager would hold there (`sluice run --secrets FILE`).
//!
//! `{ "aws:::ssm:/team/db": "<base64 of a JSON object>", "aws:::secretd:prod/api": "token",
//! "aws:::secretd:prod/db": {"USER": "app"} }`: values are strings, as the stores return
//! them, so a dry-run applies the same rules as AWS; a Secrets Manager entry may also be the
//! JSON object itself, which is what its string would hold.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use sluice_contract::credentials::SecretLocation;

use crate::error::StoreError;
use crate::ports::SecretSource;

/// Credential values read from a local file (or none at all).
#[derive(Debug, Clone, Default)]
pub struct SecretsFile {
    path: Option<PathBuf>,
    values: BTreeMap<SecretLocation, String>,
}

/// The secrets file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("secrets file {}: {message}", path.display())]
pub struct SecretsFileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong (naming the entry, never a value).
    pub message: String,
}

impl SecretsFile {
    /// No file: every location is missing (the error says how to give one).
    pub fn none() -> Self {
        SecretsFile::default()
    }

    /// Reads and checks the file at `path`.
    ///
    /// # Errors
    ///
    /// [`SecretsFileError`] naming the file and the entry when it cannot be read, is not a
    /// JSON object, has a key that is not a credential location, or a value of the wrong kind.
    pub fn load(path: &Path) -> Result<Self, SecretsFileError> {
        let fail = |message: String| SecretsFileError {
            path: path.to_owned(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot be read: {e}")))?;
        let object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes)
            .map_err(|e| {
                fail(format!(
                    "is not a JSON object of credential locations (line {}, column {})",
                    e.line(),
                    e.column()
                ))
            })?;
        let mut values = BTreeMap::new();
        for (key, value) in object {
            let location = SecretLocation::parse(&key).map_err(|e| fail(e.to_string()))?;
            let text = match (value, &location) {
                (serde_json::Value::String(text), _) => text,
                (object @ serde_json::Value::Object(_), SecretLocation::SecretsManager(_)) => {
                    object.to_string()
                }
                (_, SecretLocation::Ssm(_)) => {
                    return Err(fail(format!(
                        "{key}: an SSM value is a string (the base64 of a JSON object)"
                    )));
                }
                (_, SecretLocation::SecretsManager(_)) => {
                    return Err(fail(format!(
                        "{key}: a Secrets Manager value is a string or a JSON object"
                    )));
                }
            };
            values.insert(location, text);
        }
        Ok(SecretsFile {
            path: Some(path.to_owned()),
            values,
        })
    }
}

#[async_trait]
impl SecretSource for SecretsFile {
    async fn fetch(&self, location: &SecretLocation) -> Result<String, StoreError> {
        self.values
            .get(location)
            .cloned()
            .ok_or_else(|| StoreError::NotFound {
                key: match &self.path {
                    Some(path) => format!("{location} (secrets file {})", path.display()),
                    None => format!("{location} (no secrets file given: pass --secrets FILE)"),
                },
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.json");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[tokio::test]
    async fn entries_answer_by_location_and_objects_become_their_json_text() {
        let (_dir, path) =
            write(r#"{"aws:::ssm:/db":"eyJBIjoiYiJ9","aws:::secretd:prod/db":{"USER":"app"}}"#);
        let file = SecretsFile::load(&path).unwrap();
        let ssm = SecretLocation::parse("aws:::ssm:/db").unwrap();
        assert_eq!(file.fetch(&ssm).await.unwrap(), "eyJBIjoiYiJ9");
        let secret = SecretLocation::parse("aws:::secretd:prod/db").unwrap();
        assert_eq!(file.fetch(&secret).await.unwrap(), r#"{"USER":"app"}"#);
        let missing = SecretLocation::parse("aws:::ssm:/other").unwrap();
        let error = file.fetch(&missing).await.unwrap_err().to_string();
        assert!(error.contains("aws:::ssm:/other (secrets file "), "{error}");
        let error = SecretsFile::none().fetch(&missing).await.unwrap_err();
        assert!(error.to_string().contains("pass --secrets FILE"), "{error}");
    }

    #[test]
    fn a_bad_file_names_itself_and_the_entry_without_values() {
        let cases = [
            (r#"["x"]"#, "is not a JSON object of credential locations"),
            (r#"{"/db":"x"}"#, "\"/db\" is not a credential location"),
            (
                r#"{"aws:::ssm:/db":{"A":"very-secret"}}"#,
                "aws:::ssm:/db: an SSM value is a string",
            ),
            (
                r#"{"aws:::secretd:x":["very-secret"]}"#,
                "a string or a JSON object",
            ),
        ];
        for (text, expected) in cases {
            let (_dir, path) = write(text);
            let error = SecretsFile::load(&path).unwrap_err().to_string();
            assert!(error.starts_with("secrets file "), "{error}");
            assert!(error.contains(expected), "{error} should say {expected}");
            assert!(!error.contains("very-secret"));
        }
        let error = SecretsFile::load(Path::new("/nonexistent/s.json")).unwrap_err();
        assert!(error.to_string().contains("cannot be read"), "{error}");
    }
}
