//! The keys file: its form, every refusal, rotations, and what a served file must be.

use super::*;

fn entry(id: &str) -> KeyEntry {
    KeyEntry {
        id: id.into(),
        client: "pharmacy-1".into(),
        channel: "http".into(),
        rate: 10,
        burst: 10,
        secret_sha256: "a".repeat(64),
        created: Utc::now(),
        expires: None,
        revoked: None,
        replaces: None,
    }
}

fn text(keys: Vec<KeyEntry>) -> String {
    serde_json::to_string(&KeyFile {
        format: FORMAT.into(),
        keys,
    })
    .unwrap()
}

#[test]
fn new_keys_have_the_documented_form_and_differ() {
    let a = new_key(&[]).unwrap();
    let b = new_key(&[]).unwrap();
    assert_ne!(a.key, b.key);
    let parts: Vec<&str> = a.key.splitn(3, '_').collect();
    assert_eq!(parts[0], "eligd");
    assert_eq!(parts[1], a.id);
    assert!(valid_id(&a.id));
    assert_eq!(parts[2].len(), SECRET_LEN);
    assert!(parts[2].bytes().all(|c| SECRET_ALPHABET.contains(&c)));
    assert_eq!(
        a.secret_sha256,
        hex(&Sha256::digest(parts[2].as_bytes())),
        "the stored hash is of the secret"
    );
    assert!(!a.secret_sha256.contains(parts[2]));
    assert_eq!(
        unhex::<32>(&a.secret_sha256).map(|b| hex(&b)),
        Some(a.secret_sha256)
    );
}

#[test]
fn every_bad_entry_is_named_with_its_field() {
    let mut cases: Vec<(KeyEntry, &str)> = Vec::new();
    let mut e = entry("k1234567");
    e.id = "K1234567".into();
    cases.push((e, "id:"));
    let mut e = entry("k1234567");
    e.client = "two words".into();
    cases.push((e, "client:"));
    let mut e = entry("k1234567");
    e.client = UNAUTHENTICATED.into();
    cases.push((e, "client:"));
    let mut e = entry("k1234567");
    e.channel = "email".into();
    cases.push((e, "channel:"));
    let mut e = entry("k1234567");
    e.rate = 0;
    cases.push((e, "rate:"));
    let mut e = entry("k1234567");
    e.burst = MAX_RATE + 1;
    cases.push((e, "burst:"));
    let mut e = entry("k1234567");
    e.secret_sha256 = "xyz".into();
    cases.push((e, "secret_sha256:"));
    for (bad, field) in cases {
        let err = KeyFile::parse(&text(vec![entry("a0000000"), bad]), "keys.json").unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("key 1") && message.contains(field),
            "{message}"
        );
    }
    let twice = KeyFile::parse(&text(vec![entry("a0000000"), entry("a0000000")]), "k");
    assert!(twice.unwrap_err().to_string().contains("earlier key"));
}

#[test]
fn files_that_are_not_keys_files_are_refused_clearly() {
    for (bad, needle) in [
        ("", "not a keys file"),
        ("[]", "not a keys file"),
        (
            "{\"format\": \"other/2\", \"keys\": []}",
            "this build reads",
        ),
        (
            "{\"format\": \"eligd-keys/1\", \"keys\": [], \"x\": 1}",
            "unknown field",
        ),
        ("{\"format\": \"eligd-keys/1\"}", "missing field"),
    ] {
        let err = KeyFile::parse(bad, "keys.json").unwrap_err().to_string();
        assert!(
            err.contains(needle) && err.starts_with("keys.json"),
            "{err}"
        );
    }
}

#[cfg(unix)]
#[test]
fn a_served_file_open_to_group_writes_or_other_reads_is_refused_naming_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    let mut file = KeyFile::new();
    file.keys.push(entry("c0000000"));
    file.write(&path).unwrap();
    let chmod =
        |mode| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    for mode in [0o600, 0o640, 0o400, 0o440] {
        chmod(mode);
        let (read, stamp) = KeyFile::read_served(&path);
        assert_eq!(read.unwrap(), file, "{mode:o}");
        assert_eq!(stamp, Stamp::at(&path));
    }
    for mode in [0o666, 0o644, 0o604, 0o620, 0o602, 0o660, 0o777] {
        chmod(mode);
        let (read, stamp) = KeyFile::read_served(&path);
        let message = read.unwrap_err().to_string();
        let expected = format!(
            "keys file {} has mode {mode:04o}: it must not be writable by group or others, \
             nor readable by others (chmod 600 or 640)",
            path.display()
        );
        assert_eq!(message, expected);
        assert!(stamp.is_some(), "a refused file is still the file seen");
    }
    // Through a symlink (a Secret volume): the file's mode counts, not the link's.
    chmod(0o644);
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    assert!(matches!(
        KeyFile::read_served(&link).0,
        Err(KeyFileError::Mode { mode: 0o644, .. })
    ));
    chmod(0o440);
    assert!(KeyFile::read_served(&link).0.is_ok());
    let (missing, stamp) = KeyFile::read_served(&dir.path().join("none"));
    assert!(matches!(missing, Err(KeyFileError::Io { .. })) && stamp.is_none());
}

#[test]
fn rotations_are_followed_back_to_their_first_key() {
    let mut keys: Vec<KeyEntry> = ["a0000000", "b0000000", "c0000000", "d0000000"]
        .into_iter()
        .map(entry)
        .collect();
    keys[1].replaces = Some("a0000000".into()); // b replaces a
    keys[2].replaces = Some("b0000000".into()); // c replaces b
    keys[3].replaces = Some("gone0000".into()); // its predecessor is no longer listed
    let mut file = KeyFile::new();
    file.keys = keys.clone();
    assert_eq!(file.rotation_roots(), vec![0, 0, 0, 3]);
    // A loop written by hand ends; every key on it gets the same root.
    keys[0].replaces = Some("c0000000".into());
    keys[3].replaces = Some("d0000000".into());
    file.keys = keys;
    assert_eq!(file.rotation_roots(), vec![0, 0, 0, 3]);
}

#[test]
fn files_without_the_rotation_link_still_read() {
    let old = r#"{"format": "eligd-keys/1", "keys": [{"id": "d0000000", "client": "c-1",
        "channel": "http", "rate": 1, "burst": 1, "secret_sha256": "SECRET",
        "created": "2026-01-01T00:00:00Z", "expires": null, "revoked": null}]}"#
        .replace("SECRET", &"b".repeat(64));
    let file = KeyFile::parse(&old, "keys.json").unwrap();
    assert_eq!(file.keys[0].replaces, None);
}

#[test]
fn written_files_read_back_and_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    let mut file = KeyFile::new();
    file.keys.push(entry("b0000000"));
    file.write(&path).unwrap();
    assert_eq!(KeyFile::read(&path).unwrap(), file);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Replacing a file keeps its group read, never more.
        for (before, after) in [
            (0o640, 0o640),
            (0o644, 0o640),
            (0o666, 0o640),
            (0o400, 0o600),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(before)).unwrap();
            file.write(&path).unwrap();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, after, "{before:o}");
        }
    }
}
