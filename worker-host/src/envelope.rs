//! Decrypting an order's env (`env.json.age`) into memory.
//!
//! The plaintext is a JSON object of strings; it is parsed straight from the decrypting
//! reader and never written anywhere.

use std::collections::BTreeMap;
use std::str::FromStr;

/// Decrypts `ciphertext` with the age identity `secret_key` into the order's variables.
///
/// # Errors
///
/// A message saying which step failed (key, decryption, JSON) without any secret in it.
pub fn decrypt_env(
    ciphertext: &[u8],
    secret_key: &str,
) -> Result<BTreeMap<String, String>, String> {
    let identity = age::x25519::Identity::from_str(secret_key.trim())
        .map_err(|e| format!("the order's key is not an age identity: {e}"))?;
    let decryptor = age::Decryptor::new(ciphertext)
        .map_err(|e| format!("env.json.age is not age data: {e}"))?;
    let reader = decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(|e| format!("env.json.age cannot be decrypted with the order's key: {e}"))?;
    serde_json::from_reader(reader)
        .map_err(|e| format!("env.json.age does not hold a JSON object of strings: {e}"))
}
