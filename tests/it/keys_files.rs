//! The keys file against the real binary (issue 22, items 6 and 7): `keys rotate --overlap`
//! bounded without a panic, the old and new key of a rotation sharing one rate, a file whose
//! mode lets group or others write it (or others read it) refused at start and on reload,
//! and the file re-read when it changes (replaced by rename, or a Kubernetes-style symlink
//! swap) without any signal, a broken or loose file keeping the keys in force.

use std::path::Path;
use std::time::Instant;

use crate::access::{add_key, bearer};
use crate::support::{assert_clean_failure, eligd, http, serve, stderr, stdout, Served};
use crate::support::{metric, wait_for};

/// Sets `path`'s permission bits exactly (no umask).
pub(crate) fn chmod(path: &Path, mode: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
}

/// Replaces `file` atomically with `text` (a temporary file of mode `mode` renamed over it).
fn replace(file: &Path, text: &str, mode: u32) {
    let tmp = file.with_extension("incoming");
    std::fs::write(&tmp, text).unwrap();
    chmod(&tmp, mode);
    std::fs::rename(&tmp, file).unwrap();
}

/// `serve` with `file`; refused lookups stay 401 however many (the address's allowance of
/// refusals would otherwise turn them into 429).
fn serve_with_keys(file: &Path) -> Served {
    serve(&[
        "--demo-members",
        "1000",
        "--api-keys",
        file.to_str().unwrap(),
        "--unauthenticated-requests-per-minute",
        "100000",
    ])
}

/// The status of a JSON lookup with `key`.
fn lookup(served: &Served, key: &str) -> u16 {
    let auth = bearer(key);
    let path = "/v1/members/0012345679/eligibility";
    http(&served.addr, "GET", path, &[("authorization", &auth)], b"").status
}

fn key_id(key: &str) -> &str {
    &key[6..14]
}

fn rotate(file: &Path, key: &str, overlap: &str) -> std::process::Output {
    let file = file.to_str().unwrap();
    // `--overlap=VALUE`, so that "-1" reaches the check rather than reading as a flag.
    let overlap = format!("--overlap={overlap}");
    eligd(&["keys", "rotate", key_id(key), &overlap, "--keys-file", file])
}

#[test]
fn rotate_bounds_the_overlap_with_a_clear_error_and_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.json");
    let key = add_key(&file, "clinic-1", "http", 10, &[]);
    let before = std::fs::read(&file).unwrap();
    for bad in [
        "99999999999999999",
        "9000000000000000",
        "18446744073709551615",
        "18446744073709551616",
        "2592001",
        "-1",
        "1.5",
        "a day",
        "",
    ] {
        let o = rotate(&file, &key, bad);
        assert_clean_failure(&o, "2592000");
        assert!(stderr(&o).contains("30 days"), "{bad}: {}", stderr(&o));
        assert_eq!(
            std::fs::read(&file).unwrap(),
            before,
            "{bad}: nothing written"
        );
    }
    // The longest overlap: the old key ends 30 days from now, not "now".
    let o = rotate(&file, &key, "2592000");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).trim().starts_with("eligd_"));
    let until = (chrono::Utc::now() + chrono::Duration::days(30))
        .format("%Y-%m-%d")
        .to_string();
    assert!(stderr(&o).contains(&until), "{}", stderr(&o));
}

#[test]
fn the_old_and_the_new_key_of_a_rotation_share_one_rate() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.json");
    let old = add_key(&file, "clinic-1", "http", 1, &["--burst", "5"]);
    let served = serve_with_keys(&file);
    let o = rotate(&file, &old, "3600");
    assert!(o.status.success(), "{}", stderr(&o));
    let new = stdout(&o).trim().to_string();
    // Applied by the watcher or this signal, whichever comes first; no request is spent
    // waiting for it.
    served.signal("-HUP");
    wait_for("the successor", 10, || {
        metric(&served, "eligd_keys_loaded") == 2.0
    });
    let started = Instant::now();
    let statuses: Vec<u16> = (0..5)
        .flat_map(|_| [lookup(&served, &old), lookup(&served, &new)])
        .collect();
    let elapsed = started.elapsed().as_secs();
    assert!(
        statuses.iter().all(|s| [200, 404, 429].contains(s)),
        "{statuses:?}"
    );
    let allowed = statuses.iter().filter(|s| **s != 429).count() as u64;
    // A burst of 5 for the client, plus what a rate of 1 per second refilled meanwhile.
    assert!(
        (5..=5 + elapsed).contains(&allowed),
        "{allowed} of 10 allowed in {elapsed} s (one bucket gives 5): {statuses:?}"
    );
}

#[test]
fn a_keys_file_open_to_others_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.json");
    add_key(&file, "clinic-1", "http", 10, &[]);
    let f = file.to_str().unwrap();
    for mode in [0o666, 0o644, 0o620] {
        chmod(&file, mode);
        let o = eligd(&["serve", "--demo-members", "1000", "--api-keys", f]);
        let expected = format!(
            "keys file {f} has mode {mode:04o}: it must not be writable by group or others, nor \
             readable by others (chmod 600 or 640)"
        );
        assert_clean_failure(&o, &expected);
    }
}

#[test]
fn the_keys_file_is_read_again_when_it_changes_without_any_signal() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.json");
    let first = add_key(&file, "clinic-1", "http", 100, &[]);
    let served = serve_with_keys(&file);
    assert_ne!(lookup(&served, &first), 401);

    // A file with one more key, swapped in by rename: in force within seconds.
    let next = dir.path().join("next.json");
    std::fs::copy(&file, &next).unwrap();
    let second = add_key(&next, "clinic-2", "http", 100, &[]);
    assert_eq!(lookup(&served, &second), 401);
    std::fs::rename(&next, &file).unwrap();
    let started = Instant::now();
    wait_for("the new key, without a signal", 4, || {
        lookup(&served, &second) != 401
    });
    eprintln!("new key in force after {:?}", started.elapsed());
    assert!(served
        .log()
        .contains("the keys file changed: reloading client keys"));

    // A broken file: logged, counted once, and the keys in force keep working.
    let good = std::fs::read_to_string(&file).unwrap();
    replace(&file, "{ broken", 0o600);
    wait_for("the reload failure", 5, || {
        metric(&served, "eligd_keys_reload_failures_total") == 1.0
    });
    assert!(served.log().contains("client keys NOT reloaded"));
    assert_ne!(lookup(&served, &first), 401);
    assert_ne!(lookup(&served, &second), 401);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(
        metric(&served, "eligd_keys_reload_failures_total"),
        1.0,
        "a broken file is read once per change"
    );

    // A valid file with a third key, but writable by everyone: refused the same way.
    let loose = dir.path().join("loose.json");
    std::fs::write(&loose, &good).unwrap();
    chmod(&loose, 0o600);
    let third = add_key(&loose, "clinic-3", "http", 100, &[]);
    let text = std::fs::read_to_string(&loose).unwrap();
    replace(&file, &text, 0o666);
    wait_for("the refusal of the loose file", 5, || {
        metric(&served, "eligd_keys_reload_failures_total") == 2.0
    });
    let log = served.log();
    assert!(
        log.contains("has mode 0666: it must not be writable by group or others"),
        "{log}"
    );
    assert_eq!(
        lookup(&served, &third),
        401,
        "the loose file's key is not in force"
    );
    assert_ne!(lookup(&served, &first), 401);
    assert_ne!(lookup(&served, &second), 401);

    // The same file, its mode fixed: the change of mode alone is seen and applied.
    chmod(&file, 0o640);
    wait_for("the third key once the mode is fixed", 5, || {
        lookup(&served, &third) != 401
    });
    assert_eq!(metric(&served, "eligd_keys_loaded"), 3.0);
}

/// The layout of a Kubernetes Secret volume: `keys -> ..data/keys`, `..data -> ..<version>`;
/// an update writes a new version directory and swaps `..data` by rename.
#[cfg(unix)]
#[test]
fn a_secret_volume_update_is_seen_through_its_symlinks() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path();
    let staging = volume.join("staging.json");
    let first = add_key(&staging, "clinic-1", "http", 100, &[]);
    let version = |name: &str| {
        let d = volume.join(name);
        std::fs::create_dir(&d).unwrap();
        std::fs::copy(&staging, d.join("keys")).unwrap();
        // What the manifest's defaultMode 0400 becomes with fsGroup (kubelet adds group read).
        chmod(&d.join("keys"), 0o440);
    };
    version("..2026_01_01_00_00_00.1");
    symlink("..2026_01_01_00_00_00.1", volume.join("..data")).unwrap();
    symlink("..data/keys", volume.join("keys")).unwrap();
    let served = serve_with_keys(&volume.join("keys"));
    assert_ne!(lookup(&served, &first), 401);

    let second = add_key(&staging, "clinic-2", "http", 100, &[]);
    version("..2026_01_01_00_01_00.2");
    symlink("..2026_01_01_00_01_00.2", volume.join("..data_tmp")).unwrap();
    std::fs::rename(volume.join("..data_tmp"), volume.join("..data")).unwrap();
    wait_for("the updated Secret's new key", 4, || {
        lookup(&served, &second) != 401
    });
    assert_ne!(lookup(&served, &first), 401);
    assert_eq!(metric(&served, "eligd_keys_reload_failures_total"), 0.0);
}
