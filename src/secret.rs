//! Passwords given on the command line, in the environment or in a file (a mounted Kubernetes
//! Secret: docs/operations.md, "Secrets").
//!
//! A file is read at start, so a missing, unreadable or empty one is an error before anything
//! connects, naming the flag and the path, never the content. It is read again for every new
//! connection, so a rotated Secret (the kubelet swaps the mounted file) is used from the next
//! reconnect without a restart; a file that cannot be read then keeps the last password that
//! could, with a warning. One trailing newline (`\n` or `\r\n`, what `echo` and editors add)
//! is not part of the password; nothing else is trimmed.
//!
//! A secret is never printed: [`Secret`]'s `Debug` names only where it comes from.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A password: given as a value, or read from a file.
#[derive(Clone)]
pub enum Secret {
    Value(String),
    File(SecretFile),
}

/// A password file, with the last content that could be read.
#[derive(Clone)]
pub struct SecretFile {
    flag: &'static str,
    path: PathBuf,
    last: Arc<Mutex<String>>,
}

/// A file that cannot be used: names the flag and the path, never the content.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SecretError(String);

impl Secret {
    /// Reads `path`, given as `flag` (for messages), now.
    pub fn from_file(flag: &'static str, path: &Path) -> Result<Secret, SecretError> {
        let text = read_secret_file(flag, path)?;
        Ok(Secret::File(SecretFile {
            flag,
            path: path.to_path_buf(),
            last: Arc::new(Mutex::new(text)),
        }))
    }

    /// From the value flag or the file flag, whichever is given (clap refuses both).
    pub fn from_flags(
        value: Option<&str>,
        file_flag: &'static str,
        file: Option<&Path>,
    ) -> Result<Option<Secret>, SecretError> {
        match (value, file) {
            (_, Some(path)) => Secret::from_file(file_flag, path).map(Some),
            (Some(value), None) => Ok(Some(Secret::Value(value.to_string()))),
            (None, None) => Ok(None),
        }
    }

    /// The password to use for a new connection: a file is read again (see the module's
    /// documentation).
    pub fn current(&self) -> String {
        match self {
            Secret::Value(value) => value.clone(),
            Secret::File(file) => file.current(),
        }
    }
}

impl SecretFile {
    fn current(&self) -> String {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match read_secret_file(self.flag, &self.path) {
            Ok(text) => {
                if text != *last {
                    tracing::info!(flag = self.flag, path = %self.path.display(),
                        "the password file changed; new connections use the new password");
                    *last = text;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e,
                    "the password file cannot be read again; new connections keep the password read before");
            }
        }
        last.clone()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Value(_) => f.write_str("Secret(given)"),
            Secret::File(file) => write!(f, "Secret({} {})", file.flag, file.path.display()),
        }
    }
}

/// The largest secret file read (a password or a key is tens of bytes).
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// The content of a secret file without one trailing newline; an error naming `flag` and
/// the path (never the content) when it cannot be read, is not UTF-8, or is empty.
pub fn read_secret_file(flag: &str, path: &Path) -> Result<String, SecretError> {
    // A regular file of a secret's size: not a device (`/dev/zero` would fill memory), a
    // FIFO (which would block start-up), a directory, or a file of megabytes.
    let metadata = std::fs::metadata(path).map_err(|e| {
        SecretError(format!(
            "{flag} {}: cannot read the file ({})",
            path.display(),
            e.kind()
        ))
    })?;
    if !metadata.is_file() {
        return Err(SecretError(format!(
            "{flag} {}: not a regular file",
            path.display()
        )));
    }
    if metadata.len() > MAX_SECRET_BYTES {
        return Err(SecretError(format!(
            "{flag} {}: the file holds {} bytes; a secret is at most {MAX_SECRET_BYTES}",
            path.display(),
            metadata.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| {
        SecretError(format!(
            "{flag} {}: cannot read the file ({})",
            path.display(),
            e.kind()
        ))
    })?;
    let mut text = String::from_utf8(bytes).map_err(|_| {
        SecretError(format!(
            "{flag} {}: the file is not UTF-8 text",
            path.display()
        ))
    })?;
    if text.ends_with("\r\n") {
        text.truncate(text.len() - 2);
    } else if text.ends_with('\n') {
        text.truncate(text.len() - 1);
    }
    if text.is_empty() {
        return Err(SecretError(format!(
            "{flag} {}: the file is empty",
            path.display()
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {

    #[test]
    fn devices_fifos_and_huge_files_are_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_secret_file("--redis-password-file", Path::new("/dev/zero")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let e = read_secret_file("--redis-password-file", &fifo).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let huge = dir.path().join("huge");
        std::fs::write(&huge, vec![b'a'; 70_000]).unwrap();
        let e = read_secret_file("--redis-password-file", &huge).unwrap_err();
        assert!(e.to_string().contains("at most 65536"), "{e}");
        assert!(!e.to_string().contains("aaaa"), "{e}");
    }

    use super::*;

    #[test]
    fn one_trailing_newline_is_dropped_and_the_file_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "hunter2\n").unwrap();
        let secret = Secret::from_file("--x-file", &path).unwrap();
        assert_eq!(secret.current(), "hunter2");
        std::fs::write(&path, " rotated \n\n").unwrap();
        assert_eq!(
            secret.current(),
            " rotated \n",
            "only one newline is trimmed"
        );
        std::fs::write(&path, "crlf\r\n").unwrap();
        assert_eq!(secret.current(), "crlf");
        // Unreadable later: the last good password stays.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(secret.current(), "crlf");
        assert!(!format!("{secret:?}").contains("crlf"));
        assert!(format!("{:?}", Secret::Value("hunter2".into())) == "Secret(given)");
    }

    #[test]
    fn unusable_files_are_errors_naming_the_flag_never_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let e = Secret::from_file("--x-file", &missing)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--x-file ") && e.contains("cannot read"),
            "{e}"
        );
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let e = Secret::from_file("--x-file", &empty)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--x-file") && e.contains("empty"), "{e}");
        let binary = dir.path().join("binary");
        std::fs::write(&binary, b"hunter2\xff").unwrap();
        let e = Secret::from_file("--x-file", &binary)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not UTF-8") && !e.contains("hunter2"), "{e}");
    }
}
