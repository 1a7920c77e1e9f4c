//! The client keys file (`--api-keys`, `eligd keys … --keys-file`): what it holds, how it is
//! read (every entry checked, one clear error naming the entry and field), and how it is
//! written (a temporary file in the same directory, fsynced, mode 0600, renamed into place,
//! so a reader sees the old file or the new one, never half of one).
//!
//! A key reads `eligd_<id>_<secret>`. The id (8 characters of `a-z0-9`) is stored in clear
//! so a key can be found and named; the secret (22 base62 characters, 131 random bits) is
//! stored only as its SHA-256, so the file does not give keys away.
//!
//! ```json
//! {"format": "eligd-keys/1", "keys": [
//!   {"id": "k3f9a1b2", "client": "pharmacy-tehran-12", "channel": "http", "rate": 50,
//!    "burst": 50, "secret_sha256": "…64 hex…", "created": "2026-11-28T08:00:00Z",
//!    "expires": null, "revoked": null}]}
//! ```

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::watch::Stamp;
use super::KeyChannel;

pub const FORMAT: &str = "eligd-keys/1";
/// The `client` label of inquiries that presented no valid key: no key may use it.
pub use crate::metrics::UNAUTHENTICATED;
pub const ID_LEN: usize = 8;
pub const SECRET_LEN: usize = 22;
/// A key's rate and burst are at most this many inquiries per second.
pub const MAX_RATE: u32 = 1_000_000;
const MAX_CLIENT_LEN: usize = 64;
const ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    pub format: String,
    pub keys: Vec<KeyEntry>,
}

/// One key as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    pub id: String,
    pub client: String,
    pub channel: String,
    pub rate: u32,
    pub burst: u32,
    pub secret_sha256: String,
    pub created: DateTime<Utc>,
    #[serde(default)]
    pub expires: Option<DateTime<Utc>>,
    #[serde(default)]
    pub revoked: Option<DateTime<Utc>>,
    /// The key this one was issued to replace (`keys rotate`).
    #[serde(default)]
    pub replaces: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a keys file: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}: key {index} ({id}): {message}")]
    Entry {
        path: String,
        index: usize,
        id: String,
        message: String,
    },
    #[error("keys file {path} has mode {mode:04o}: it must not be writable by group or others, nor readable by others (chmod 600 or 640)")]
    Mode { path: String, mode: u32 },
    #[error("no random source: {0}")]
    Random(String),
}

/// The permission bits a served keys file may not have: written by group or others, read
/// by others (what ssh refuses for a private key). The file holds no secret, but whoever can
/// change it can let any key in, and whoever can read it learns every client and limit.
pub const LOOSE_MODE_BITS: u32 = 0o022 | 0o004;

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Whether `id` has the form of a key id.
pub fn valid_id(id: &str) -> bool {
    // Checked on every request: a table lookup per byte, not a search of the alphabet.
    const IN_ALPHABET: [bool; 256] = {
        let mut table = [false; 256];
        let mut i = 0;
        while i < ID_ALPHABET.len() {
            table[ID_ALPHABET[i] as usize] = true;
            i += 1;
        }
        table
    };
    id.len() == ID_LEN && id.bytes().all(|b| IN_ALPHABET[usize::from(b)])
}

/// Whether `client` may name a client: it becomes a metric label and an audit field, so it
/// is short and plain (`A-Z a-z 0-9 . _ -`), and not the name that counts requests without a
/// valid key.
pub fn valid_client(client: &str) -> bool {
    !client.is_empty()
        && client != UNAUTHENTICATED
        && client.len() <= MAX_CLIENT_LEN
        && client
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl KeyEntry {
    /// Checks one entry; the message names the field.
    fn check(&self) -> Result<(), String> {
        if !valid_id(&self.id) {
            return Err(format!("id: {ID_LEN} characters of a-z and 0-9"));
        }
        if !valid_client(&self.client) {
            return Err(format!(
                "client: 1 to {MAX_CLIENT_LEN} characters of A-Z, a-z, 0-9, '.', '_', '-', and not {UNAUTHENTICATED:?}"
            ));
        }
        if KeyChannel::parse(&self.channel).is_none() {
            return Err(format!(
                "channel: {:?} is not one of {}",
                self.channel,
                KeyChannel::expected()
            ));
        }
        if !(1..=MAX_RATE).contains(&self.rate) {
            return Err(format!("rate: 1 to {MAX_RATE} inquiries per second"));
        }
        if !(1..=MAX_RATE).contains(&self.burst) {
            return Err(format!("burst: 1 to {MAX_RATE}"));
        }
        if !is_hex(&self.secret_sha256, 64) {
            return Err("secret_sha256: 64 lowercase hexadecimal digits".into());
        }
        if self.replaces.as_deref().is_some_and(|r| !valid_id(r)) {
            return Err("replaces: not a key id".into());
        }
        Ok(())
    }
}

impl KeyFile {
    pub fn new() -> KeyFile {
        KeyFile {
            format: FORMAT.to_string(),
            keys: Vec::new(),
        }
    }

    /// Parses and checks a keys file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<KeyFile, KeyFileError> {
        let file: KeyFile = serde_json::from_str(text).map_err(|e| KeyFileError::Syntax {
            path: path.to_string(),
            // serde's messages quote field names and types, never a secret (none is stored).
            message: e.to_string(),
        })?;
        if file.format != FORMAT {
            return Err(KeyFileError::Syntax {
                path: path.to_string(),
                message: format!("format is {:?}, this build reads {FORMAT:?}", file.format),
            });
        }
        let mut seen = std::collections::HashSet::new();
        for (index, entry) in file.keys.iter().enumerate() {
            let entry_error = |message: String| KeyFileError::Entry {
                path: path.to_string(),
                index,
                id: entry.id.chars().take(ID_LEN + 4).collect(),
                message,
            };
            entry.check().map_err(entry_error)?;
            if !seen.insert(entry.id.as_str()) {
                return Err(entry_error("id: used by an earlier key".into()));
            }
        }
        Ok(file)
    }

    /// Reads and checks a keys file.
    pub fn read(path: &Path) -> Result<KeyFile, KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
            path: path.display().to_string(),
            source,
        })?;
        KeyFile::parse(&text, &path.display().to_string())
    }

    /// Reads and checks the keys file a service uses (`--api-keys`): refused, before it is
    /// parsed, when its mode is looser than [`LOOSE_MODE_BITS`] allow. The mode is that of
    /// the file the path resolves to (a Kubernetes Secret volume holds symlinks) and is read
    /// from the open file, so the file checked is the file read. Also returns the stamp of
    /// the file opened (`None` when it could not be opened), for the watcher.
    pub fn read_served(path: &Path) -> (Result<KeyFile, KeyFileError>, Option<Stamp>) {
        let shown = || path.display().to_string();
        let io = |source| KeyFileError::Io {
            path: shown(),
            source,
        };
        let mut file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) => return (Err(io(e)), None),
        };
        let metadata = match file.metadata() {
            Ok(metadata) => metadata,
            Err(e) => return (Err(io(e)), None),
        };
        let stamp = Some(Stamp::of(&metadata));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = metadata.permissions().mode() & 0o7777;
            if mode & LOOSE_MODE_BITS != 0 {
                return (
                    Err(KeyFileError::Mode {
                        path: shown(),
                        mode,
                    }),
                    stamp,
                );
            }
        }
        let mut text = String::new();
        if let Err(e) = std::io::Read::read_to_string(&mut file, &mut text) {
            return (Err(io(e)), stamp);
        }
        (KeyFile::parse(&text, &shown()), stamp)
    }

    /// Writes the file atomically, readable and writable by its owner only (and readable by
    /// its group when the file replaced was).
    pub fn write(&self, path: &Path) -> Result<(), KeyFileError> {
        let io = |source| KeyFileError::Io {
            path: path.display().to_string(),
            source,
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".eligd-keys-")
            .tempfile_in(dir)
            .map_err(io)?;
        let mut text = serde_json::to_string_pretty(self).map_err(|e| KeyFileError::Syntax {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        text.push('\n');
        tmp.write_all(text.as_bytes()).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            // A file being replaced keeps its group and its group read (a service reading it
            // through its group, as with Compose), never more than 0640; a new one is 0600.
            let existing = std::fs::metadata(path).ok();
            let mode = existing
                .as_ref()
                .map_or(0o600, |m| m.mode() & 0o640 | 0o600);
            if let Some(existing) = &existing {
                // Only possible for a group the user belongs to; otherwise the user's group.
                let _ = std::os::unix::fs::chown(tmp.path(), None, Some(existing.gid()));
            }
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))
                .map_err(io)?;
        }
        tmp.persist(path).map_err(|e| io(e.error))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// For each key, the index of the first key of its rotation (following `replaces` back
    /// through the keys still in the file): keys of one rotation share one rate limit. A
    /// chain that loops (only by hand) is named by its smallest index.
    pub fn rotation_roots(&self) -> Vec<usize> {
        let by_id: std::collections::HashMap<&str, usize> = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.id.as_str(), i))
            .collect();
        let replaced = |i: usize| {
            self.keys[i]
                .replaces
                .as_deref()
                .and_then(|r| by_id.get(r).copied())
        };
        (0..self.keys.len())
            .map(|start| {
                let mut chain = vec![start];
                let mut at = start;
                while let Some(previous) = replaced(at) {
                    if let Some(pos) = chain.iter().position(|&c| c == previous) {
                        return chain[pos..].iter().copied().min().unwrap_or(previous);
                    }
                    chain.push(previous);
                    at = previous;
                }
                at
            })
            .collect()
    }

    pub fn find_mut(&mut self, id: &str) -> Option<&mut KeyEntry> {
        self.keys.iter_mut().find(|k| k.id == id)
    }
}

/// `len` random characters of `alphabet`, drawn without bias.
fn random_text(alphabet: &[u8], len: usize) -> Result<String, KeyFileError> {
    let mut out = String::with_capacity(len);
    // Rejection sampling: bytes at or above the largest multiple of the alphabet's size are
    // drawn again, so every character is equally likely.
    let limit = 256 - (256 % alphabet.len());
    while out.len() < len {
        let mut bytes = [0u8; 64];
        getrandom::fill(&mut bytes).map_err(|e| KeyFileError::Random(e.to_string()))?;
        for b in bytes {
            if (b as usize) < limit && out.len() < len {
                out.push(alphabet[b as usize % alphabet.len()] as char);
            }
        }
    }
    Ok(out)
}

/// A new key: its id, the key string to hand to the client (shown once), and the stored
/// hash of its secret.
pub struct NewKey {
    pub id: String,
    pub key: String,
    pub secret_sha256: String,
}

/// Draws a new key whose id is not in `taken`.
pub fn new_key(taken: &[KeyEntry]) -> Result<NewKey, KeyFileError> {
    let id = loop {
        let id = random_text(ID_ALPHABET, ID_LEN)?;
        if !taken.iter().any(|k| k.id == id) {
            break id;
        }
    };
    let secret = random_text(SECRET_ALPHABET, SECRET_LEN)?;
    Ok(NewKey {
        key: format!("eligd_{id}_{secret}"),
        secret_sha256: hex(&Sha256::digest(secret.as_bytes())),
        id,
    })
}

/// Lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// Reads hexadecimal into bytes (`None` when it is not exactly `N` bytes of hex).
pub fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let bytes = text.as_bytes();
    if bytes.len() != N * 2 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests;
