//! Content identity for the remote objects flux writes itself (docs/stores.md, "Content
//! identity").
//!
//! A store identifies an object's version by its ETag or version id (HDFS: by its
//! modification time and size), and flux's digest of an object is made of that identity:
//! no content is read. But the identity does not always follow the content: an HDFS file
//! rewritten with the same bytes has a new modification time, and an S3 object uploaded
//! again with the same bytes in other parts (or encrypted with SSE-KMS) has a new ETag.
//!
//! When flux uploads an output (or streams a copy into the store) it reads every byte
//! anyway, so it hashes them on the way (blake3, as for local files) and records the hash
//! against the identity the store gave the new object: in this process (for the consumers
//! decided later in the same build) and in the state DB's digest cache, keyed by the URI
//! and validated by the identity as a local file's entry is by (size, mtime, inode). While
//! the object's identity is still the recorded one, its digest is the content hash; a
//! producer that rewrites identical bytes records the same hash against the new identity,
//! so its consumers' input digests do not change (early cutoff). An object flux did not
//! write, or one changed behind flux's back, keeps the digest of its store identity.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::state::{CachedDigest, Hash};
use crate::target::Meta;

/// What this process wrote: target → its identity and content hash, for lookups.
static WRITTEN: Mutex<Option<HashMap<String, CachedDigest>>> = Mutex::new(None);
/// Recorded since the last [`take_new`]: to be written to the state DB.
static NEW: Mutex<Vec<(String, CachedDigest)>> = Mutex::new(Vec::new());

/// Record that the object at `target`, as `meta` (from the store's answer to the upload)
/// describes it, holds bytes whose blake3 is `digest`.
pub fn record(target: &str, meta: &Meta, digest: Hash) {
    let entry = CachedDigest {
        size: meta.size,
        mtime_ns: meta.mtime_ns,
        inode: meta.inode,
        digest,
        hashed_at_ns: crate::target::now_ns(),
    };
    WRITTEN.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_default().insert(target.to_string(), entry);
    NEW.lock().unwrap_or_else(|e| e.into_inner()).push((target.to_string(), entry));
}

/// The content hash this process recorded for `target`, if the object is still the one
/// it wrote (`meta` is its current stat).
pub fn written(target: &str, meta: &Meta) -> Option<Hash> {
    let w = WRITTEN.lock().unwrap_or_else(|e| e.into_inner());
    w.as_ref()?.get(target).and_then(|c| matches(c, meta).then_some(c.digest))
}

/// Whether a recorded entry (from this process or the state DB) describes the object as
/// `meta` does: same size, same store identity (ETag or version; the modification time
/// when the store has neither).
pub fn matches(c: &CachedDigest, meta: &Meta) -> bool {
    !meta.is_dir && c.size == meta.size && c.inode == meta.inode && c.mtime_ns == meta.mtime_ns
}

/// Take what was recorded since the last call, for the state DB.
pub fn take_new() -> Vec<(String, CachedDigest)> {
    std::mem::take(&mut *NEW.lock().unwrap_or_else(|e| e.into_inner()))
}

/// A blake3 hasher fed while bytes go to the store.
#[derive(Default)]
pub struct Hashing(blake3::Hasher);

impl Hashing {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish(&self) -> Hash {
        *self.0.finalize().as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_hash_holds_only_for_the_identity_it_was_recorded_with() {
        let meta = Meta { size: 5, mtime_ns: 0, inode: 0xabc1, is_dir: false };
        let digest = *blake3::hash(b"hello").as_bytes();
        record("s3://content-test/a.txt", &meta, digest);
        assert_eq!(written("s3://content-test/a.txt", &meta), Some(digest));
        // Another version of the object (new ETag), another size, another object.
        assert_eq!(written("s3://content-test/a.txt", &Meta { inode: 0xabc3, ..meta }), None);
        assert_eq!(written("s3://content-test/a.txt", &Meta { size: 6, ..meta }), None);
        assert_eq!(written("s3://content-test/b.txt", &meta), None);
        // Handed to the state DB once.
        let new = take_new();
        assert!(new.iter().any(|(k, c)| k == "s3://content-test/a.txt" && c.digest == digest));
        assert!(!take_new().iter().any(|(k, _)| k == "s3://content-test/a.txt"));
    }
}
