//! Re-reading `--api-keys` when the file changes, not only on SIGHUP.
//!
//! A Kubernetes Secret volume is updated in place by the kubelet: the new files are written
//! into a fresh directory and the `..data` symlink is swapped to it, so the path eligd was
//! given now resolves to another file, and nobody sends a signal. `eligd keys …` also
//! replaces the file (write a temporary file, rename it into place). Both change what the
//! path resolves to, so the watcher compares a [`Stamp`] of the resolved file (device, inode,
//! size, modification and change times, mode) with the stamp of the file last read, once a
//! second (the task in `commands::serve`), and reloads through the path SIGHUP takes
//! (`AppState::reload_keys`):
//! the same log lines, the same failure counter, and a bad file keeps the keys in force. A
//! `stat` per second costs nothing and needs no inotify (which loses track of symlink swaps
//! and of files replaced by rename unless the directory is watched).
//!
//! A file that changed is read once per change: a broken file is logged and counted once,
//! then left alone until it changes again (or SIGHUP asks for it).

use std::path::Path;
use std::time::Duration;

/// How often the watcher looks at the file.
pub const POLL: Duration = Duration::from_secs(1);

/// What identifies one version of a file on disk (of the file a path resolves to); fields a
/// platform does not report are 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    mode: u32,
}

impl Stamp {
    /// The stamp of an open file's metadata.
    pub fn of(metadata: &std::fs::Metadata) -> Stamp {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Stamp {
                dev: metadata.dev(),
                ino: metadata.ino(),
                size: metadata.size(),
                mtime: (metadata.mtime(), metadata.mtime_nsec()),
                ctime: (metadata.ctime(), metadata.ctime_nsec()),
                mode: metadata.mode(),
            }
        }
        #[cfg(not(unix))]
        {
            let since_epoch = |t: std::io::Result<std::time::SystemTime>| {
                t.ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or((0, 0), |d| {
                        (
                            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                            i64::from(d.subsec_nanos()),
                        )
                    })
            };
            Stamp {
                dev: 0,
                ino: 0,
                size: metadata.len(),
                mtime: since_epoch(metadata.modified()),
                ctime: since_epoch(metadata.created()),
                mode: u32::from(metadata.permissions().readonly()),
            }
        }
    }

    /// The stamp of the file `path` resolves to now (symlinks followed); `None` when there is
    /// none.
    pub fn at(path: &Path) -> Option<Stamp> {
        std::fs::metadata(path).ok().map(|m| Stamp::of(&m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_changes_with_the_file_behind_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        assert_eq!(Stamp::at(&path), None);
        std::fs::write(&path, "one").unwrap();
        let first = Stamp::at(&path).unwrap();
        assert_eq!(
            Stamp::at(&path),
            Some(first),
            "stable while nothing changes"
        );
        // Replaced by rename (what `eligd keys` and editors do): another inode.
        let tmp = dir.path().join(".tmp");
        std::fs::write(&tmp, "two").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let second = Stamp::at(&path).unwrap();
        assert_ne!(first, second);
        // A chmod changes the change time and the mode.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            assert_ne!(Stamp::at(&path), Some(second));
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_swap_is_seen_as_kubernetes_does_it() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // keys -> ..data/keys, ..data -> ..v1 (then ..v2), as in a Secret volume.
        for (version, text) in [("..v1", "one"), ("..v2", "two")] {
            std::fs::create_dir(d.join(version)).unwrap();
            std::fs::write(d.join(version).join("keys"), text).unwrap();
        }
        std::os::unix::fs::symlink("..v1", d.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/keys", d.join("keys")).unwrap();
        let before = Stamp::at(&d.join("keys")).unwrap();
        std::os::unix::fs::symlink("..v2", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        let after = Stamp::at(&d.join("keys")).unwrap();
        assert_ne!(before, after);
    }
}
