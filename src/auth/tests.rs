//! Keys in force: authentication, channels, reloads, and buckets shared by a rotation.

use super::keyfile::{new_key, KeyEntry, FORMAT};
use super::*;
use chrono::Utc;

fn file_with(entries: Vec<KeyEntry>) -> KeyFile {
    KeyFile {
        format: FORMAT.into(),
        keys: entries,
    }
}

fn entry(channel: &str) -> (KeyEntry, String) {
    let new = new_key(&[]).unwrap();
    let entry = KeyEntry {
        id: new.id,
        client: "clinic-7".into(),
        channel: channel.into(),
        rate: 5,
        burst: 5,
        secret_sha256: new.secret_sha256,
        created: Utc::now(),
        expires: None,
        revoked: None,
        replaces: None,
    };
    (entry, new.key)
}

fn bearer(key: &str) -> Vec<u8> {
    format!("Bearer {key}").into_bytes()
}

#[test]
fn a_key_is_accepted_only_whole_and_in_force() {
    let (good, good_key) = entry("http");
    let (mut revoked, revoked_key) = entry("any");
    revoked.revoked = Some(Utc::now());
    let (mut expired, expired_key) = entry("fhir");
    expired.expires = Some(Utc::now() - chrono::Duration::seconds(1));
    let metrics = crate::metrics::Metrics::new();
    let keys = Keys::from_file(&file_with(vec![good, revoked, expired]), None, &metrics);
    let now = Utc::now().timestamp_millis();
    let key = keys.authenticate(Some(&bearer(&good_key)), now).unwrap();
    assert_eq!(key.client, "clinic-7");
    assert_eq!(key.channel, KeyChannel::Http);
    assert_eq!(
        keys.authenticate(None, now).err(),
        Some(KeyRefusal::Missing)
    );
    let mut wrong_secret = good_key.clone();
    wrong_secret.pop();
    wrong_secret.push(if good_key.ends_with('A') { 'B' } else { 'A' });
    for (header, why) in [
        (bearer(&wrong_secret), KeyRefusal::Invalid),
        (bearer(&revoked_key), KeyRefusal::Invalid),
        (bearer(&expired_key), KeyRefusal::Invalid),
        (
            bearer("eligd_zzzzzzzz_AAAAAAAAAAAAAAAAAAAAAA"),
            KeyRefusal::Invalid,
        ),
        (
            format!("Basic {good_key}").into_bytes(),
            KeyRefusal::Malformed,
        ),
        (bearer("eligd_short_x"), KeyRefusal::Malformed),
        (bearer("sk_live_whatever"), KeyRefusal::Malformed),
        (bearer(&format!("{good_key}!")), KeyRefusal::Malformed),
        (vec![0xff, 0xfe], KeyRefusal::Malformed),
    ] {
        assert_eq!(keys.authenticate(Some(&header), now).err(), Some(why));
    }
}

#[test]
fn channels_allow_their_own_routes_and_any_allows_all() {
    for c in KeyChannel::ALL {
        assert!(KeyChannel::Any.allows(c));
        assert!(c.allows(c));
    }
    assert!(!KeyChannel::Http.allows(KeyChannel::Fhir));
    assert!(!KeyChannel::Ussd.allows(KeyChannel::Sms));
}

#[test]
fn a_reload_keeps_the_keys_in_force_when_the_file_is_bad_and_keeps_buckets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    let (first, first_key) = entry("http");
    file_with(vec![first.clone()]).write(&path).unwrap();
    let metrics = crate::metrics::Metrics::new();
    let store = KeyStore::open(&path, &metrics).unwrap();
    let now = Utc::now().timestamp_millis();
    let before = store
        .keys()
        .authenticate(Some(&bearer(&first_key)), now)
        .unwrap();
    assert!(matches!(
        before.bucket.take(5),
        crate::limits::Taken::Allowed(_)
    ));
    std::fs::write(&path, "{ not json").unwrap();
    assert!(store.reload(&metrics).is_err());
    assert!(store
        .keys()
        .authenticate(Some(&bearer(&first_key)), now)
        .is_ok());
    let (second, second_key) = entry("ussd");
    file_with(vec![first, second]).write(&path).unwrap();
    assert_eq!(store.reload(&metrics).unwrap(), 2);
    let after = store
        .keys()
        .authenticate(Some(&bearer(&first_key)), now)
        .unwrap();
    assert!(
        Arc::ptr_eq(&before.bucket, &after.bucket),
        "an unchanged key keeps its bucket"
    );
    assert!(store
        .keys()
        .authenticate(Some(&bearer(&second_key)), now)
        .is_ok());
}

#[test]
fn a_missing_or_bad_file_is_a_clear_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = crate::metrics::Metrics::new();
    let missing = KeyStore::open(&dir.path().join("nope.json"), &metrics)
        .err()
        .unwrap();
    assert!(missing.to_string().contains("nope.json"), "{missing}");
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        "{\"format\": \"eligd-keys/1\", \"keys\": [{\"id\": 1}]}",
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let err = KeyStore::open(&bad, &metrics).err().unwrap().to_string();
    assert!(
        err.contains("bad.json") && err.contains("not a keys file"),
        "{err}"
    );
}

/// A successor of `old` as `eligd keys rotate` writes it; returns it and its key.
fn successor(old: &KeyEntry) -> (KeyEntry, String) {
    let new = new_key(&[]).unwrap();
    let entry = KeyEntry {
        id: new.id,
        secret_sha256: new.secret_sha256,
        replaces: Some(old.id.clone()),
        ..old.clone()
    };
    (entry, new.key)
}

fn drain(bucket: &KeyBucket) -> usize {
    (0..100)
        .take_while(|_| matches!(bucket.take(1), crate::limits::Taken::Allowed(_)))
        .count()
}

#[test]
fn the_keys_of_a_rotation_share_one_bucket() {
    let metrics = crate::metrics::Metrics::new();
    let (old, old_key) = entry("http");
    let (new, new_key) = successor(&old);
    let (newer, newer_key) = successor(&new);
    let (other, other_key) = entry("http");
    let (mut faster, faster_key) = successor(&other);
    faster.rate = 50;
    let keys = Keys::from_file(
        &file_with(vec![old, new, newer, other, faster]),
        None,
        &metrics,
    );
    let now = Utc::now().timestamp_millis();
    let bucket = |key: &str| {
        keys.authenticate(Some(&bearer(key)), now)
            .unwrap()
            .bucket
            .clone()
    };
    assert!(Arc::ptr_eq(&bucket(&old_key), &bucket(&new_key)));
    assert!(Arc::ptr_eq(&bucket(&old_key), &bucket(&newer_key)));
    assert!(!Arc::ptr_eq(&bucket(&old_key), &bucket(&other_key)));
    assert!(
        !Arc::ptr_eq(&bucket(&other_key), &bucket(&faster_key)),
        "a successor given another rate has its own bucket"
    );
    // One client, one rate: the burst of 5 is spent through either key.
    assert_eq!(drain(&bucket(&old_key)), 5);
    assert_eq!(drain(&bucket(&new_key)), 0);
}

#[test]
fn a_reload_that_adds_a_successor_gives_it_the_bucket_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    let (old, old_key) = entry("http");
    file_with(vec![old.clone()]).write(&path).unwrap();
    let metrics = crate::metrics::Metrics::new();
    let store = KeyStore::open(&path, &metrics).unwrap();
    let now = Utc::now().timestamp_millis();
    let before = store
        .keys()
        .authenticate(Some(&bearer(&old_key)), now)
        .unwrap();
    for _ in 0..3 {
        assert!(matches!(
            before.bucket.take(1),
            crate::limits::Taken::Allowed(_)
        ));
    }
    let (new, new_key) = successor(&old);
    file_with(vec![old.clone(), new.clone()])
        .write(&path)
        .unwrap();
    assert_eq!(store.reload(&metrics).unwrap(), 2);
    let keys = store.keys();
    for key in [&old_key, &new_key] {
        let after = keys.authenticate(Some(&bearer(key)), now).unwrap();
        assert!(Arc::ptr_eq(&before.bucket, &after.bucket));
    }
    assert!(
        drain(&before.bucket) <= 3,
        "the new key did not get a full bucket"
    );
    // The link edited away: the two keys part ways, one keeps the bucket.
    let mut unlinked = new;
    unlinked.replaces = None;
    file_with(vec![old, unlinked]).write(&path).unwrap();
    store.reload(&metrics).unwrap();
    let keys = store.keys();
    let a = keys.authenticate(Some(&bearer(&old_key)), now).unwrap();
    let b = keys.authenticate(Some(&bearer(&new_key)), now).unwrap();
    assert!(!Arc::ptr_eq(&a.bucket, &b.bucket));
    assert!(Arc::ptr_eq(&a.bucket, &before.bucket));
}

#[cfg(unix)]
#[test]
fn a_loose_mode_is_refused_at_start_and_on_reload_and_the_change_is_seen_once() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    let (first, first_key) = entry("http");
    file_with(vec![first.clone()]).write(&path).unwrap();
    let chmod = |mode| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode));
    let metrics = crate::metrics::Metrics::new();
    chmod(0o666).unwrap();
    let refused = KeyStore::open(&path, &metrics).err().unwrap().to_string();
    assert!(refused.contains("has mode 0666"), "{refused}");
    chmod(0o600).unwrap();
    let store = KeyStore::open(&path, &metrics).unwrap();
    assert!(!store.changed_on_disk());
    let (second, second_key) = entry("http");
    file_with(vec![first, second]).write(&path).unwrap();
    chmod(0o644).unwrap();
    assert!(store.changed_on_disk());
    let err = store.reload(&metrics).unwrap_err().to_string();
    assert!(err.contains("has mode 0644"), "{err}");
    assert!(!store.changed_on_disk(), "a refused file is read once");
    let now = Utc::now().timestamp_millis();
    let keys = store.keys();
    assert!(keys.authenticate(Some(&bearer(&first_key)), now).is_ok());
    assert!(keys.authenticate(Some(&bearer(&second_key)), now).is_err());
    chmod(0o640).unwrap();
    assert!(store.changed_on_disk());
    assert_eq!(store.reload(&metrics).unwrap(), 2);
    std::fs::remove_file(&path).unwrap();
    assert!(store.changed_on_disk(), "a file gone is a change");
    assert!(store.reload(&metrics).is_err());
    assert!(!store.changed_on_disk());
    assert!(store
        .keys()
        .authenticate(Some(&bearer(&second_key)), now)
        .is_ok());
}
