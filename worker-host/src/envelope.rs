//! Decrypting an order's env (`env.json.age`) into memory.
//!
//! The plaintext is a JSON object of strings; it is parsed straight from the decrypting
//! reader and never written anywhere.

use std::collections::BTreeMap;
use std::str::FromStr;

/// Why an order's env could not be decrypted: which step failed (key, decryption, JSON).
/// No message holds the key or a decrypted value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// The identity the dispatch carries is not an age identity.
    #[error("the order's key is not an age identity: {reason}")]
    BadKey {
        /// age's reason (never the key).
        reason: &'static str,
    },
    /// `env.json.age` is not age data.
    #[error("env.json.age is not age data: {0}")]
    NotAge(#[source] age::DecryptError),
    /// `env.json.age` cannot be decrypted with the order's key.
    #[error("env.json.age cannot be decrypted with the order's key: {0}")]
    Decrypt(#[source] age::DecryptError),
    /// The plaintext is not a JSON object of strings. Only where it goes wrong is kept:
    /// serde_json's message may quote a decrypted value.
    #[error("env.json.age does not hold a JSON object of strings (line {line}, column {column})")]
    NotJson {
        /// The line where reading stopped.
        line: usize,
        /// The column where reading stopped.
        column: usize,
    },
}

/// Decrypts `ciphertext` with the age identity `secret_key` into the order's variables.
///
/// # Errors
///
/// An [`EnvError`] saying which step failed (key, decryption, JSON), without any secret in
/// it.
pub fn decrypt_env(
    ciphertext: &[u8],
    secret_key: &str,
) -> Result<BTreeMap<String, String>, EnvError> {
    let identity = age::x25519::Identity::from_str(secret_key.trim())
        .map_err(|reason| EnvError::BadKey { reason })?;
    let decryptor = age::Decryptor::new(ciphertext).map_err(EnvError::NotAge)?;
    let reader = decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(EnvError::Decrypt)?;
    serde_json::from_reader(reader).map_err(|e| EnvError::NotJson {
        line: e.line(),
        column: e.column(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;
    use std::io::Write;

    fn encrypt_to(identity: &age::x25519::Identity, plaintext: &[u8]) -> Vec<u8> {
        let recipient = identity.to_public();
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                .unwrap();
        let mut out = Vec::new();
        let mut writer = encryptor.wrap_output(&mut out).unwrap();
        writer.write_all(plaintext).unwrap();
        writer.finish().unwrap();
        out
    }

    #[test]
    fn decrypts_the_env_with_the_orders_key() {
        let identity = age::x25519::Identity::generate();
        let ciphertext = encrypt_to(&identity, br#"{"TOKEN":"s3cr3t-value"}"#);
        let env = decrypt_env(&ciphertext, identity.to_string().expose_secret()).unwrap();
        assert_eq!(env["TOKEN"], "s3cr3t-value");
    }

    #[test]
    fn failures_say_which_step_failed_and_leak_nothing() {
        let identity = age::x25519::Identity::generate();
        let other = age::x25519::Identity::generate();
        let ciphertext = encrypt_to(&identity, br#"{"TOKEN":"s3cr3t-value"}"#);
        let wrong_key = decrypt_env(&ciphertext, other.to_string().expose_secret())
            .unwrap_err()
            .to_string();
        assert!(wrong_key.contains("cannot be decrypted"), "{wrong_key}");
        let bad_key = decrypt_env(&ciphertext, "not-a-key")
            .unwrap_err()
            .to_string();
        assert!(bad_key.contains("not an age identity"), "{bad_key}");
        let not_json = decrypt_env(
            &encrypt_to(&identity, b"TOKEN=s3cr3t-value"),
            identity.to_string().expose_secret(),
        )
        .unwrap_err()
        .to_string();
        assert!(not_json.contains("JSON object of strings"), "{not_json}");
        for message in [wrong_key, bad_key, not_json] {
            assert!(!message.contains("s3cr3t"), "{message}");
        }
    }
}
