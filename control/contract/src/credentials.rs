//! Credential locations and how a value fetched from one becomes environment variables
//! (DESIGN §2).
//!
//! An order lists where its credentials live (`ssm_paths`, `secret_manager_paths`); init_job
//! fetches each location once per job and merges what it holds into the order's env before
//! the env is encrypted into the bundle. The rules live here, with no IO, so that SSM,
//! Secrets Manager and the local secrets file (`sluice run --secrets`) expand a value the
//! same way, and a value that breaks them fails the same way everywhere:
//!
//! - **SSM** (`aws:::ssm:<path>`): the parameter's value is the base64 of a JSON object
//!   whose values are strings; each member becomes a variable. Anything else is an error
//!   naming the path.
//! - **Secrets Manager** (`aws:::secretd:<id>`): a secret string holding a JSON object
//!   expands like SSM's (string, number and boolean members; numbers and booleans as their
//!   JSON text); any other string becomes one variable named after the id's last segment,
//!   upper-cased, with `-` and `.` turned into `_` (`prod/db-password` → `DB_PASSWORD`).
//!
//! Error messages name the location and the member, never a value.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use serde::{Deserialize, Serialize};

/// Prefix of an SSM parameter location.
pub const SSM_PREFIX: &str = "aws:::ssm:";
/// Prefix of a Secrets Manager secret location.
pub const SECRETS_MANAGER_PREFIX: &str = "aws:::secretd:";

/// Where a credential lives (stored and sent in its full form, `aws:::ssm:/team/db`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum SecretLocation {
    /// An SSM parameter, by name (`/team/db`).
    Ssm(String),
    /// A Secrets Manager secret, by name or ARN.
    SecretsManager(String),
}

/// Which store a list of locations is for (the job field it came from).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretStore {
    /// `ssm_paths`.
    Ssm,
    /// `secret_manager_paths`.
    SecretsManager,
}

impl SecretStore {
    /// The job field that lists locations of this store (`ssm_paths`,
    /// `secret_manager_paths`).
    pub fn field(self) -> &'static str {
        match self {
            SecretStore::Ssm => "ssm_paths",
            SecretStore::SecretsManager => "secret_manager_paths",
        }
    }
}

/// Why a credential location, as written, is refused. Each variant carries the text as
/// written, so its message quotes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    /// A location of one store, written in the field of the other.
    #[error("{text:?} belongs in {field}", field = .belongs_in.field())]
    WrongStore {
        /// The location as written.
        text: String,
        /// The store its prefix names.
        belongs_in: SecretStore,
    },
    /// Nothing (or only spaces) after the prefix.
    #[error("{text:?} names no parameter or secret")]
    Empty {
        /// The location as written.
        text: String,
    },
    /// A control character in the parameter name or secret id.
    #[error("{text:?} contains a control character")]
    ControlCharacter {
        /// The location as written.
        text: String,
    },
    /// Neither prefix, where the full form is required.
    #[error(
        "{text:?} is not a credential location ({ssm}<path> or {secretd}<id>)",
        ssm = SSM_PREFIX,
        secretd = SECRETS_MANAGER_PREFIX
    )]
    NotALocation {
        /// The text as written.
        text: String,
    },
}

impl SecretLocation {
    /// Parses a location written in a job field meant for `store`: either the full form
    /// (`aws:::ssm:/team/db`) or just the path, since the field already says the store.
    ///
    /// # Errors
    ///
    /// [`LocationError`] saying what is wrong (empty, a control character, or a location of
    /// the other store).
    pub fn parse_for(store: SecretStore, text: &str) -> Result<Self, LocationError> {
        let (path, found) = if let Some(path) = text.strip_prefix(SSM_PREFIX) {
            (path, Some(SecretStore::Ssm))
        } else if let Some(path) = text.strip_prefix(SECRETS_MANAGER_PREFIX) {
            (path, Some(SecretStore::SecretsManager))
        } else {
            (text, None)
        };
        if let Some(found) = found
            && found != store
        {
            return Err(LocationError::WrongStore {
                text: text.to_owned(),
                belongs_in: found,
            });
        }
        if path.trim().is_empty() {
            return Err(LocationError::Empty {
                text: text.to_owned(),
            });
        }
        if path.chars().any(char::is_control) {
            return Err(LocationError::ControlCharacter {
                text: text.to_owned(),
            });
        }
        Ok(match store {
            SecretStore::Ssm => SecretLocation::Ssm(path.to_owned()),
            SecretStore::SecretsManager => SecretLocation::SecretsManager(path.to_owned()),
        })
    }

    /// Parses a location in its full form (a key of the local secrets file).
    ///
    /// # Errors
    ///
    /// [`LocationError::NotALocation`] when the text has neither prefix, and the errors of
    /// [`SecretLocation::parse_for`].
    pub fn parse(text: &str) -> Result<Self, LocationError> {
        let store = if text.starts_with(SSM_PREFIX) {
            SecretStore::Ssm
        } else if text.starts_with(SECRETS_MANAGER_PREFIX) {
            SecretStore::SecretsManager
        } else {
            return Err(LocationError::NotALocation {
                text: text.to_owned(),
            });
        };
        Self::parse_for(store, text)
    }

    /// The parameter name or secret id, without the prefix.
    pub fn path(&self) -> &str {
        match self {
            SecretLocation::Ssm(path) | SecretLocation::SecretsManager(path) => path,
        }
    }
}

impl From<SecretLocation> for String {
    fn from(location: SecretLocation) -> String {
        location.to_string()
    }
}

impl TryFrom<String> for SecretLocation {
    type Error = LocationError;

    fn try_from(text: String) -> Result<Self, LocationError> {
        SecretLocation::parse(&text)
    }
}

impl fmt::Display for SecretLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretLocation::Ssm(path) => write!(f, "{SSM_PREFIX}{path}"),
            SecretLocation::SecretsManager(id) => write!(f, "{SECRETS_MANAGER_PREFIX}{id}"),
        }
    }
}

/// A fetched value does not follow its store's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct CredentialError {
    /// The location, in full form.
    pub location: String,
    /// What is wrong (never the value).
    pub message: ValueError,
}

/// What is wrong with a fetched value. Variants name the member or the variable, never a
/// value; where JSON does not parse they give where the reader stopped, not its message
/// (which may quote the value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// An SSM parameter's value is not base64.
    #[error(
        "the parameter's value is not base64 (it must be the base64 of a JSON object of strings)"
    )]
    NotBase64,
    /// An SSM parameter's value decodes to something other than a JSON object.
    #[error(
        "the parameter's value decodes to something other than a JSON object (line {line}, column {column})"
    )]
    NotAnObject {
        /// Line where the JSON reader stopped.
        line: usize,
        /// Column where the JSON reader stopped.
        column: usize,
    },
    /// A secret starting with `{` is not a JSON object.
    #[error(
        "the secret looks like a JSON object but does not parse (line {line}, column {column})"
    )]
    BrokenObject {
        /// Line where the JSON reader stopped.
        line: usize,
        /// Column where the JSON reader stopped.
        column: usize,
    },
    /// A member of an SSM object is not a string.
    #[error("member {member:?} is {kind}, not a string")]
    NotAString {
        /// The member's name.
        member: String,
        /// What it is instead (`a number`, `an object`, ...).
        kind: &'static str,
    },
    /// A member of a Secrets Manager object is not a string, number or boolean.
    #[error("member {member:?} is {kind}; only strings, numbers and booleans become variables")]
    NotAScalar {
        /// The member's name.
        member: String,
        /// What it is instead (`null`, `an array`, `an object`).
        kind: &'static str,
    },
    /// A plain-string secret whose id does not make a variable name.
    #[error(
        "the secret is a plain string, and its id's last segment {segment:?} does not make a variable name; store it as a JSON object instead"
    )]
    NoVariableName {
        /// The id's last `/` or `:` segment.
        segment: String,
    },
    /// A name that cannot be an environment variable.
    #[error("{name:?} is not a valid variable name")]
    InvalidName {
        /// The name.
        name: String,
    },
    /// A value holding a NUL byte, which an environment cannot hold.
    #[error("the value of {name} contains a NUL byte")]
    NulByte {
        /// The variable's name.
        name: String,
    },
}

/// The variables a value fetched from `location` holds, in name order.
///
/// # Errors
///
/// [`CredentialError`] naming the location (and the member) when the value breaks the rules
/// of the module docs, or yields a name that cannot be an environment variable or a value
/// with a NUL byte.
pub fn expand(
    location: &SecretLocation,
    value: &str,
) -> Result<Vec<(String, String)>, CredentialError> {
    let fail = |message: ValueError| CredentialError {
        location: location.to_string(),
        message,
    };
    let vars = match location {
        SecretLocation::Ssm(_) => {
            let compact: String = value.split_ascii_whitespace().collect();
            let decoded = STANDARD
                .decode(&compact)
                .or_else(|_| STANDARD_NO_PAD.decode(&compact))
                .map_err(|_| fail(ValueError::NotBase64))?;
            let object: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&decoded).map_err(|e| {
                    fail(ValueError::NotAnObject {
                        line: e.line(),
                        column: e.column(),
                    })
                })?;
            members(object, Members::StringsOnly).map_err(fail)?
        }
        SecretLocation::SecretsManager(id) => {
            if value.trim_start().starts_with('{') {
                let object: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(value).map_err(|e| {
                        fail(ValueError::BrokenObject {
                            line: e.line(),
                            column: e.column(),
                        })
                    })?;
                members(object, Members::Scalars).map_err(fail)?
            } else {
                vec![(name_from_id(id).map_err(fail)?, value.to_owned())]
            }
        }
    };
    for (name, value) in &vars {
        if !is_variable_name(name) {
            return Err(fail(ValueError::InvalidName { name: name.clone() }));
        }
        if value.contains('\0') {
            return Err(fail(ValueError::NulByte { name: name.clone() }));
        }
    }
    Ok(vars)
}

/// Which JSON members become variables.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Members {
    /// Strings only (SSM's contract).
    StringsOnly,
    /// Strings, numbers and booleans (Secrets Manager key/value secrets).
    Scalars,
}

/// The variables a JSON object holds, or the error naming the member that cannot be one.
fn members(
    object: serde_json::Map<String, serde_json::Value>,
    accepted: Members,
) -> Result<Vec<(String, String)>, ValueError> {
    object
        .into_iter()
        .map(|(name, value)| match (value, accepted) {
            (serde_json::Value::String(text), _) => Ok((name, text)),
            (serde_json::Value::Number(n), Members::Scalars) => Ok((name, n.to_string())),
            (serde_json::Value::Bool(b), Members::Scalars) => Ok((name, b.to_string())),
            (other, Members::StringsOnly) => Err(ValueError::NotAString {
                member: name,
                kind: kind(&other),
            }),
            (other, Members::Scalars) => Err(ValueError::NotAScalar {
                member: name,
                kind: kind(&other),
            }),
        })
        .collect()
}

/// The variable a plain-string secret becomes: the id's last `/` or `:` segment,
/// upper-cased, `-` and `.` turned into `_`.
fn name_from_id(id: &str) -> Result<String, ValueError> {
    let last = id.rsplit(['/', ':']).next().unwrap_or(id);
    let name: String = last
        .chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    if name.is_empty()
        || name.starts_with(|c: char| c.is_ascii_digit())
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(ValueError::NoVariableName {
            segment: last.to_owned(),
        });
    }
    Ok(name)
}

/// Names of variables whose value is a secret wherever it comes from (compared without
/// regard to case).
const SECRET_NAMES: [&str; 7] = [
    "PASSWORD",
    "TOKEN",
    "SECRET",
    "API_KEY",
    "PRIVATE_KEY",
    "ACCESS_KEY",
    "CALLBACK_URL",
];
/// Endings of such names (`GITHUB_TOKEN`, `AWS_SECRET_ACCESS_KEY`, `DB_PASSWORD`...).
const SECRET_SUFFIXES: [&str; 11] = [
    "_PASSWORD",
    "_PASSWD",
    "_TOKEN",
    "_SECRET",
    "_SECRET_KEY",
    "_PRIVATE_KEY",
    "_ACCESS_KEY",
    "_API_KEY",
    "_CREDENTIALS",
    "_CALLBACK_URL",
    "_AUTH",
];

/// Whether a variable named `name` holds a secret by its name alone (`*_TOKEN`,
/// `*_PASSWORD`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, ...), so a plain `env_vars`
/// entry is masked like a credential.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_NAMES.contains(&upper.as_str()) || SECRET_SUFFIXES.iter().any(|s| upper.ends_with(s))
}

/// A name an environment variable can have (what `env_vars` accepts too).
pub fn is_variable_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('=') && !name.contains('\0')
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssm(path: &str) -> SecretLocation {
        SecretLocation::Ssm(path.to_owned())
    }

    fn secretd(id: &str) -> SecretLocation {
        SecretLocation::SecretsManager(id.to_owned())
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn secret_names_are_recognised_by_their_usual_endings() {
        for name in [
            "GITHUB_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "db_password",
            "PASSWORD",
            "STRIPE_API_KEY",
            "SSH_PRIVATE_KEY",
            "CALLBACK_URL",
            "NPM_AUTH",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in [
            "PATH",
            "TOKENIZER",
            "PASSWORD_FILE",
            "DB_HOST",
            "AWS_REGION",
        ] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    #[test]
    fn locations_parse_in_full_or_bare_form_and_print_in_full() {
        let full = SecretLocation::parse_for(SecretStore::Ssm, "aws:::ssm:/team/db").unwrap();
        let bare = SecretLocation::parse_for(SecretStore::Ssm, "/team/db").unwrap();
        assert_eq!(full, bare);
        assert_eq!(full.to_string(), "aws:::ssm:/team/db");
        assert_eq!(
            SecretLocation::parse("aws:::secretd:prod/db").unwrap(),
            secretd("prod/db")
        );
        let wrong =
            SecretLocation::parse_for(SecretStore::Ssm, "aws:::secretd:prod/db").unwrap_err();
        assert!(
            wrong
                .to_string()
                .contains("belongs in secret_manager_paths"),
            "{wrong}"
        );
        assert_eq!(
            wrong,
            LocationError::WrongStore {
                text: "aws:::secretd:prod/db".to_owned(),
                belongs_in: SecretStore::SecretsManager,
            }
        );
        assert!(SecretLocation::parse_for(SecretStore::Ssm, "aws:::ssm: ").is_err());
        assert!(
            SecretLocation::parse("/team/db")
                .unwrap_err()
                .to_string()
                .contains("not a credential location")
        );
    }

    #[test]
    fn ssm_values_are_base64_json_objects_of_strings() {
        let value = STANDARD.encode(r#"{"DB_USER":"app","DB_PASSWORD":"s3cr3t-pw"}"#);
        assert_eq!(
            expand(&ssm("/db"), &value).unwrap(),
            pairs(&[("DB_PASSWORD", "s3cr3t-pw"), ("DB_USER", "app")])
        );
        // Line-wrapped or unpadded base64 is still base64.
        let wrapped = format!("{}\n{}", &value[..10], value[10..].trim_end_matches('='));
        assert_eq!(expand(&ssm("/db"), &wrapped).unwrap().len(), 2);
    }

    #[test]
    fn ssm_values_breaking_the_contract_name_the_path_and_never_the_value() {
        let cases = [
            ("plain-text-password".to_owned(), "not base64"),
            (
                STANDARD.encode("plain-text-password"),
                "something other than a JSON object",
            ),
            (
                STANDARD.encode(r#"["a"]"#),
                "something other than a JSON object",
            ),
            (
                STANDARD.encode(r#"{"PORT":5432}"#),
                r#"member "PORT" is a number, not a string"#,
            ),
            (
                STANDARD.encode(r#"{"A=B":"x"}"#),
                "not a valid variable name",
            ),
            (STANDARD.encode("{\"A\":\"x\\u0000y\"}"), "NUL byte"),
        ];
        for (value, expected) in cases {
            let error = expand(&ssm("/team/db"), &value).unwrap_err();
            let text = error.to_string();
            assert!(text.starts_with("aws:::ssm:/team/db: "), "{text}");
            assert!(text.contains(expected), "{text} should say {expected}");
            assert!(
                !text.contains("plain-text-password"),
                "{text} quotes the value"
            );
        }
    }

    #[test]
    fn secrets_manager_objects_expand_and_plain_strings_are_named_from_the_id() {
        assert_eq!(
            expand(
                &secretd("prod/db"),
                r#"{"USER":"app","PORT":5432,"TLS":true}"#
            )
            .unwrap(),
            pairs(&[("PORT", "5432"), ("TLS", "true"), ("USER", "app")])
        );
        assert_eq!(
            expand(&secretd("prod/db-password"), "hunter2-long").unwrap(),
            pairs(&[("DB_PASSWORD", "hunter2-long")])
        );
        assert_eq!(
            expand(
                &secretd("arn:aws:secretsmanager:us-east-1:1:secret:api.token"),
                "t"
            )
            .unwrap(),
            pairs(&[("API_TOKEN", "t")])
        );
        // A multi-line plain string is one value.
        assert_eq!(
            expand(&secretd("deploy-key"), "line one\nline two\n").unwrap(),
            pairs(&[("DEPLOY_KEY", "line one\nline two\n")])
        );
    }

    #[test]
    fn secrets_manager_values_breaking_the_rules_are_errors() {
        let broken = expand(&secretd("prod/db"), r#"{"USER": "sup3r-secret""#).unwrap_err();
        assert!(
            broken.to_string().contains("does not parse (line 1"),
            "{broken}"
        );
        assert!(!broken.to_string().contains("sup3r-secret"));
        let nested = expand(&secretd("prod/db"), r#"{"X":{"y":1}}"#).unwrap_err();
        assert!(
            nested.to_string().contains(r#"member "X" is an object"#),
            "{nested}"
        );
        let unnamed = expand(&secretd("prod/9lives"), "v").unwrap_err();
        assert!(
            unnamed.to_string().contains("store it as a JSON object"),
            "{unnamed}"
        );
    }
}
