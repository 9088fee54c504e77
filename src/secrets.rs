//! Encryption of secrets at rest (the providers' credentials): XChaCha20-Poly1305 from RustCrypto
//! with a key given by configuration. Every stored value names the key that sealed it, so keys
//! can be rotated: new values use the current key, older ones are still read with the previous
//! keys until `omega keys rotate-secrets` has sealed them again.
//!
//! A sealed value reads `omega:v1:<key id>:<base64url(nonce ‖ ciphertext)>`; anything else is a
//! value stored before encryption existed, read as it is (and sealed by the next rotation).
//! The associated data binds a value to its row: a ciphertext copied into another business's
//! row does not open.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use chacha20poly1305::{
    Key, KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};
use sha2::{Digest, Sha256};

const PREFIX: &str = "omega:v1:";
const NONCE_LEN: usize = 24;

/// One key and its id.
struct SecretKey {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl SecretKey {
    fn new(id: Option<&str>, key_base64: &str) -> anyhow::Result<Self> {
        let bytes = STANDARD.decode(key_base64.trim()).context("a secrets key must be base64")?;
        let Ok(bytes) = <[u8; 32]>::try_from(bytes.as_slice()) else {
            bail!("a secrets key must be 32 bytes (base64 of 32 random bytes: `openssl rand -base64 32`)");
        };
        let id = match id {
            Some(id) => {
                let valid = !id.is_empty()
                    && id.len() <= 32
                    && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                if !valid {
                    bail!("a secrets key id must be 1 to 32 letters, digits, '-' or '_'");
                }
                id.to_owned()
            }
            // Derived from the key (one-way), so that an id need not be configured.
            None => format!("k{}", &hex::encode(Sha256::digest([b"omega secrets key id:", &bytes[..]].concat()))[..8]),
        };
        Ok(Self { id, cipher: XChaCha20Poly1305::new(&Key::from(bytes)) })
    }
}

/// The current key (seals) and the previous ones (only open).
pub struct SecretKeys {
    current: SecretKey,
    previous: Vec<SecretKey>,
}

impl std::fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let previous: Vec<&str> = self.previous.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("SecretKeys").field("current", &self.current.id).field("previous", &previous).finish()
    }
}

/// Where a stored value stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Sealed<'a> {
    /// Stored before encryption: plaintext.
    Plain,
    /// Sealed with the key of this id.
    With(&'a str),
}

/// Which key seals a stored value, without opening it.
pub fn sealed_with(stored: &str) -> Sealed<'_> {
    match stored.strip_prefix(PREFIX).and_then(|rest| rest.split_once(':')) {
        Some((id, _)) => Sealed::With(id),
        None => Sealed::Plain,
    }
}

impl SecretKeys {
    /// `current` and `previous` are base64 keys; a previous key may be given as `ID:BASE64`.
    pub fn new(current_id: Option<&str>, current: &str, previous: &[String]) -> anyhow::Result<Self> {
        let current = SecretKey::new(current_id, current).context("OMEGA_SECRETS_KEY")?;
        let mut keys = Vec::new();
        for entry in previous.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
            // Base64 has no ':', so an id prefix is unambiguous.
            let (id, key) = match entry.split_once(':') {
                Some((id, key)) => (Some(id), key),
                None => (None, entry),
            };
            let key = SecretKey::new(id, key).context("OMEGA_SECRETS_PREVIOUS_KEYS")?;
            if key.id == current.id {
                continue; // The current key listed again.
            }
            keys.push(key);
        }
        Ok(Self { current, previous: keys })
    }

    /// A random key for tests and for the key file: base64 of 32 bytes.
    pub fn generate_key() -> String {
        STANDARD.encode(rand::random::<[u8; 32]>())
    }

    /// The id new values are sealed with.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// Seals `plaintext` for the row `context` names.
    pub fn seal(&self, plaintext: &str, context: &str) -> anyhow::Result<String> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let ciphertext = self
            .current
            .cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: plaintext.as_bytes(), aad: context.as_bytes() })
            .map_err(|_| anyhow::anyhow!("sealing a secret failed"))?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ciphertext);
        Ok(format!("{PREFIX}{}:{}", self.current.id, URL_SAFE_NO_PAD.encode(blob)))
    }

    /// Opens a stored value (plaintext rows from before encryption are answered as they are).
    pub fn open(&self, stored: &str, context: &str) -> anyhow::Result<String> {
        let Some(rest) = stored.strip_prefix(PREFIX) else { return Ok(stored.to_owned()) };
        let (id, blob) = rest.split_once(':').context("a sealed secret without its key id")?;
        let key = std::iter::once(&self.current).chain(&self.previous).find(|k| k.id == id).with_context(|| {
            format!("a secret is sealed with key {id:?}, which is not configured (OMEGA_SECRETS_PREVIOUS_KEYS?)")
        })?;
        let blob = URL_SAFE_NO_PAD.decode(blob).context("a sealed secret that is not base64")?;
        if blob.len() < NONCE_LEN {
            bail!("a sealed secret too short to hold its nonce");
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at its length");
        let plaintext = key
            .cipher
            .decrypt(&XNonce::from(nonce), Payload { msg: ciphertext, aad: context.as_bytes() })
            .map_err(|_| anyhow::anyhow!("a secret sealed with key {id:?} does not open (altered, or moved)"))?;
        String::from_utf8(plaintext).context("a secret that is not UTF-8")
    }
}

/// The key file used when no key is configured: next to the SQLite database, else
/// `data/omega-secrets.key`.
pub fn default_key_file(database_url: &str) -> PathBuf {
    match crate::store::sqlite_file(database_url).and_then(|file| Path::new(file).parent()) {
        Some(dir) => dir.join("omega-secrets.key"),
        None => PathBuf::from("data/omega-secrets.key"),
    }
}

/// Reads the key in `path`, creating the file (readable by its owner only) with a new random
/// key if there is none. Created under a temporary name and linked into place, so that two
/// processes starting at once agree on one key.
pub fn key_from_file(path: &Path) -> anyhow::Result<String> {
    if !path.exists() {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut temp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("writing in {}", dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            temp.as_file().set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        writeln!(temp, "{}", SecretKeys::generate_key())?;
        temp.as_file().sync_all()?;
        match std::fs::hard_link(temp.path(), path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("creating the secrets key file {}", path.display())),
        }
    }
    let key =
        std::fs::read_to_string(path).with_context(|| format!("reading the secrets key file {}", path.display()))?;
    Ok(key.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_rotates() {
        let (old, new) = (SecretKeys::generate_key(), SecretKeys::generate_key());
        let before = SecretKeys::new(Some("old"), &old, &[]).unwrap();
        let sealed = before.seal(r#"{"auth_token":"secret"}"#, "7/twilio").unwrap();
        assert!(!sealed.contains("secret"));
        assert_eq!(sealed_with(&sealed), Sealed::With("old"));
        assert_eq!(before.open(&sealed, "7/twilio").unwrap(), r#"{"auth_token":"secret"}"#);
        // Bound to its row.
        assert!(before.open(&sealed, "8/twilio").is_err());
        // After rotation the old key still opens, until it is dropped.
        let after = SecretKeys::new(None, &new, &[format!("old:{old}")]).unwrap();
        assert!(after.current_id().starts_with('k'));
        assert_eq!(after.open(&sealed, "7/twilio").unwrap(), r#"{"auth_token":"secret"}"#);
        let dropped = SecretKeys::new(None, &new, &[]).unwrap();
        assert!(dropped.open(&sealed, "7/twilio").is_err());
        // Plaintext from before encryption reads as it is.
        assert_eq!(sealed_with("{}"), Sealed::Plain);
        assert_eq!(dropped.open("{}", "7/twilio").unwrap(), "{}");
        assert!(!format!("{after:?}").contains(&new));
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(SecretKeys::new(None, "c2hvcnQ=", &[]).is_err());
        assert!(SecretKeys::new(Some("a:b"), &SecretKeys::generate_key(), &[]).is_err());
    }

    #[test]
    fn the_key_file_is_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/key");
        let first = key_from_file(&path).unwrap();
        assert_eq!(key_from_file(&path).unwrap(), first);
        assert!(SecretKeys::new(None, &first, &[]).is_ok());
    }
}
