//! Client keys: who may ask, on which channel, how fast (docs/security.md, "Client keys").
//!
//! Clinics, pharmacies, hospitals and the USSD/SMS gateways each hold a key
//! (`Authorization: Bearer eligd_<id>_<secret>`). The service keeps the keys of
//! `--api-keys` ([`keyfile`]) in memory as a [`Keys`] set behind an `ArcSwap`: a SIGHUP, or
//! the file changing on disk ([`watch`]), reads the file again and swaps the new set in at
//! once, so no valid key is refused while it reloads, and a file that fails to parse, or
//! whose mode lets others change or read it, leaves the keys in force ([`KeyStore::reload`]).
//!
//! Each key takes from a token bucket ([`KeyBucket`]); the keys of one rotation (linked by
//! `replaces`) take from the same one, so a client holding the old and the new key during the
//! overlap still has one rate.
//!
//! A presented key is found by its id, then its secret is hashed (SHA-256) and compared with
//! the stored hash in constant time (`subtle`); an unknown id is compared against a dummy hash
//! the same way, so timing does not tell which ids exist. Revoked and expired keys are refused
//! like unknown ones. A key's channel limits the routes it may call.

pub mod keyfile;
pub mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::limits::KeyBucket;
use keyfile::{KeyFile, KeyFileError};

/// The channel a key is issued for (`any`: every channel).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyChannel {
    Http,
    Fhir,
    Ussd,
    Sms,
    Any,
}

impl KeyChannel {
    pub const ALL: [KeyChannel; 5] = [
        KeyChannel::Http,
        KeyChannel::Fhir,
        KeyChannel::Ussd,
        KeyChannel::Sms,
        KeyChannel::Any,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyChannel::Http => "http",
            KeyChannel::Fhir => "fhir",
            KeyChannel::Ussd => "ussd",
            KeyChannel::Sms => "sms",
            KeyChannel::Any => "any",
        }
    }

    pub fn parse(s: &str) -> Option<KeyChannel> {
        KeyChannel::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub fn expected() -> String {
        KeyChannel::ALL.map(KeyChannel::as_str).join(", ")
    }

    /// Whether a key of this channel may call routes of `channel` (never `Any`).
    pub fn allows(self, channel: KeyChannel) -> bool {
        self == KeyChannel::Any || self == channel
    }
}

/// A configured key, ready to check.
pub struct Key {
    pub id: String,
    /// The client's name, interned (see [`intern_client`]): the audit record of every
    /// request carries it without touching a shared reference count.
    pub client: &'static str,
    pub channel: KeyChannel,
    secret_sha256: [u8; 32],
    /// Milliseconds since the Unix epoch from which the key no longer works.
    expires_ms: Option<i64>,
    revoked: bool,
    pub bucket: Arc<KeyBucket>,
    /// This key's series of `eligd_client_inquiries_total`, made once per outcome.
    pub counters: crate::metrics::ClientCounters,
    /// The secret last presented and found to match the stored hash: a client sends the same
    /// key on every request, and comparing with it (in constant time) spares a SHA-256.
    verified: arc_swap::ArcSwapOption<Box<[u8]>>,
}

impl Key {
    /// Whether the key may be used at `now_ms` (Unix milliseconds).
    fn in_force(&self, now_ms: i64) -> bool {
        !self.revoked && self.expires_ms.is_none_or(|e| now_ms < e)
    }
}

/// A client name as a `&'static str`: each distinct name is leaked once and then shared.
/// Names come from the keys file only (a few hundred at most over a process's life, however
/// often it is reloaded), so what is kept is bounded.
pub fn intern_client(name: &str) -> &'static str {
    static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(found) = names.iter().find(|n| **n == name) {
        return found;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.push(leaked);
    leaked
}

/// Why a presented key was not accepted (for the log and the 401 message; never the key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    #[error("no key: send Authorization: Bearer <key>")]
    Missing,
    #[error("the Authorization header is not a Bearer eligd key")]
    Malformed,
    #[error("the key is not valid (unknown, revoked or expired)")]
    Invalid,
}

/// The keys in force, by id (the id's 8 bytes, hashed with a fast non-keyed hash: ids are
/// ours and only ever looked up).
#[derive(Default)]
pub struct Keys {
    by_id: HashMap<[u8; 8], Arc<Key>, foldhash::fast::FixedState>,
}

fn id_bytes(id: &str) -> Option<[u8; 8]> {
    id.as_bytes().try_into().ok()
}

const DUMMY_HASH: [u8; 32] = [0x5a; 32];

impl Keys {
    /// The keys of a checked file. The keys of one rotation with the same rate and burst
    /// share one bucket ([`KeyFile::rotation_roots`]); a bucket one of them had in
    /// `previous` is kept, so a reload neither refills buckets nor splits a rotation's.
    pub fn from_file(
        file: &KeyFile,
        previous: Option<&Keys>,
        metrics: &crate::metrics::Metrics,
    ) -> Keys {
        let buckets = shared_buckets(file, previous);
        let mut by_id = HashMap::with_capacity_and_hasher(file.keys.len(), Default::default());
        for (entry, bucket) in file.keys.iter().zip(buckets) {
            // Checked when the file was read: 8 ASCII characters.
            let Some(id) = id_bytes(&entry.id) else {
                continue;
            };
            let client = intern_client(&entry.client);
            let key = Key {
                id: entry.id.clone(),
                counters: metrics.client_counters(client),
                client,
                channel: KeyChannel::parse(&entry.channel).unwrap_or(KeyChannel::Http),
                secret_sha256: keyfile::unhex::<32>(&entry.secret_sha256).unwrap_or(DUMMY_HASH),
                expires_ms: entry.expires.map(|e| e.timestamp_millis()),
                revoked: entry.revoked.is_some(),
                bucket,
                verified: arc_swap::ArcSwapOption::empty(),
            };
            by_id.insert(id, Arc::new(key));
        }
        Keys { by_id }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The key an `Authorization` header value presents, if it is in force at `now_ms`
    /// (Unix milliseconds).
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        now_ms: i64,
    ) -> Result<Arc<Key>, KeyRefusal> {
        let header = authorization.ok_or(KeyRefusal::Missing)?;
        let header = std::str::from_utf8(header).map_err(|_| KeyRefusal::Malformed)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(KeyRefusal::Malformed)?
            .trim();
        let (id, secret) = token
            .strip_prefix("eligd_")
            .and_then(|rest| rest.split_once('_'))
            .ok_or(KeyRefusal::Malformed)?;
        if !keyfile::valid_id(id)
            || secret.is_empty()
            || secret.len() > 64
            || !secret.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(KeyRefusal::Malformed);
        }
        let key = id_bytes(id).and_then(|id| self.by_id.get(&id));
        let guard = key.map(|k| k.verified.load());
        let seen: Option<&[u8]> = guard.as_ref().and_then(|g| (**g).as_ref()).map(|a| &a[..]);
        let matches = match seen {
            Some(seen) if seen.len() == secret.len() => seen.ct_eq(secret.as_bytes()).into(),
            _ => {
                let stored = key.map_or(&DUMMY_HASH, |k| &k.secret_sha256);
                let presented: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
                let matches: bool = presented.ct_eq(stored).into();
                if let (true, Some(key)) = (matches, key) {
                    key.verified.store(Some(Arc::new(
                        secret.as_bytes().to_vec().into_boxed_slice(),
                    )));
                }
                matches
            }
        };
        match key {
            Some(key) if matches && key.in_force(now_ms) => Ok(Arc::clone(key)),
            _ => Err(KeyRefusal::Invalid),
        }
    }
}

/// One bucket per key of `file`, in its order: the keys of a rotation with the same rate
/// and burst get the same `Arc`, the one a key of theirs had in `previous` when there is one.
fn shared_buckets(file: &KeyFile, previous: Option<&Keys>) -> Vec<Arc<KeyBucket>> {
    let roots = file.rotation_roots();
    let group = |i: usize| (roots[i], file.keys[i].rate, file.keys[i].burst);
    let mut members: HashMap<(usize, u32, u32), Vec<usize>> = HashMap::new();
    for i in 0..file.keys.len() {
        members.entry(group(i)).or_default().push(i);
    }
    let mut buckets: HashMap<(usize, u32, u32), Arc<KeyBucket>> = HashMap::new();
    // A bucket goes to one group only (keys whose link was edited away part ways).
    let mut taken: std::collections::HashSet<*const KeyBucket> = Default::default();
    (0..file.keys.len())
        .map(|i| {
            let g = group(i);
            let bucket = buckets.entry(g).or_insert_with(|| {
                let (_, rate, burst) = g;
                // The bucket a key of the group had before this reload, at this rate and burst.
                let kept = previous.and_then(|p| {
                    members.get(&g)?.iter().find_map(|&j| {
                        p.by_id
                            .get(&id_bytes(&file.keys[j].id)?)
                            .filter(|k| k.bucket.rate() == rate && k.bucket.burst() == burst)
                            .filter(|k| taken.insert(Arc::as_ptr(&k.bucket)))
                            .map(|k| Arc::clone(&k.bucket))
                    })
                });
                kept.unwrap_or_else(|| Arc::new(KeyBucket::new(rate, burst)))
            });
            Arc::clone(bucket)
        })
        .collect()
}

/// The keys of `--api-keys`, reloaded on SIGHUP and when the file changes.
pub struct KeyStore {
    path: PathBuf,
    current: ArcSwap<Keys>,
    /// The stamp of the file last read, accepted or not (`None`: none could be opened); held
    /// while a reload runs, so reloads never overlap.
    seen: std::sync::Mutex<Option<watch::Stamp>>,
}

impl KeyStore {
    /// Reads the file; an error here stops the service from starting. `metrics` holds the
    /// keys' series.
    pub fn open(path: &Path, metrics: &crate::metrics::Metrics) -> Result<KeyStore, KeyFileError> {
        let (file, stamp) = KeyFile::read_served(path);
        Ok(KeyStore {
            path: path.to_path_buf(),
            current: ArcSwap::from_pointee(Keys::from_file(&file?, None, metrics)),
            seen: std::sync::Mutex::new(stamp),
        })
    }

    /// The keys in force now.
    pub fn keys(&self) -> arc_swap::Guard<Arc<Keys>> {
        self.current.load()
    }

    /// Reads the file again and swaps the new keys in; on an error the keys in force stay.
    /// Returns how many keys are in force now.
    pub fn reload(&self, metrics: &crate::metrics::Metrics) -> Result<usize, KeyFileError> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let (file, stamp) = KeyFile::read_served(&self.path);
        *seen = stamp;
        let keys = Keys::from_file(&file?, Some(&self.current.load()), metrics);
        let n = keys.len();
        self.current.store(Arc::new(keys));
        Ok(n)
    }

    /// Whether the file the path resolves to is not the one last read ([`watch`]).
    pub fn changed_on_disk(&self) -> bool {
        let seen = *self.seen.lock().unwrap_or_else(|p| p.into_inner());
        watch::Stamp::at(&self.path) != seen
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests;
