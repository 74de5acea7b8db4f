//! Copies between stores (`action = "copy"`, and downloads into the cache), never through
//! a temporary file and never with a whole object in memory:
//!
//! - within one object store (same scheme and bucket or container) the store copies the
//!   object itself: S3 CopyObject, GCS copy, Azure Copy Blob. No byte of the body goes
//!   through flux, and the destination appears whole when the copy completes. HDFS has no
//!   such call (its client reads and writes), so it streams like two stores;
//! - across stores, or from or to local disk, the body streams: a GET's chunks go into a
//!   multipart upload of the store's `part_size` parts, at most two parts in flight (an object of at
//!   most one part is one PUT), or into a local file beside the destination that is
//!   renamed when complete. A local source is uploaded as any staged output is.
//!
//! A GET whose body breaks off is resumed where it broke (object_store does so within its
//! retry budget; past it, flux asks for the rest again, pinned to the object's ETag, while
//! each request makes progress). A failed upload is aborted, so no part lingers.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path as ObjPath;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use super::{Loc, Meta, REQUESTS, content, err, identity, obj_path, open, tmp_beside, to_meta, upload};

/// Multipart uploads in flight at once: memory is about this many parts plus one.
const IN_FLIGHT: usize = 2;

/// Whether a scheme's stores copy objects themselves (object_store's `copy`).
fn server_side(scheme: &str) -> bool {
    matches!(scheme, "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss")
}

/// Copy `from` to the remote target `to` and stat the result: a server-side copy when both
/// are in the same object store, else a stream (a local file: an upload).
pub fn copy_to(from: &Loc<'_>, to: &str) -> Result<Meta, String> {
    let src = match from {
        Loc::Local(p) => return upload(p, to),
        Loc::Remote(src) => *src,
    };
    let (r, src_store, ua) = open(src)?;
    let (_, dst_store, ub) = open(to)?;
    let (from_key, to_key) = (obj_path(ua.key), obj_path(ub.key));
    if ua.root() == ub.root() && server_side(ua.scheme) {
        return r.rt.block_on(async {
            REQUESTS.copy.fetch_add(1, Relaxed);
            dst_store.copy(&from_key, &to_key).await.map_err(|e| match e {
                object_store::Error::NotFound { .. } => format!("{src}: no such object"),
                e => err(to, e),
            })?;
            // The copy's answer carries no ETag that object_store passes on.
            REQUESTS.head.fetch_add(1, Relaxed);
            let m = dst_store.head(&to_key).await.map_err(|e| err(to, e))?;
            Ok(to_meta(&m))
        });
    }
    let part = r.part_size(&ub);
    let mut hash = content::Hashing::default();
    let meta = r.rt.block_on(async {
        let mut body = Body::open(&*src_store, from_key, src).await?;
        let size = body.size;
        let put = if size <= part as u64 {
            // One part at most: one PUT of what is in memory anyway.
            let mut buf = Vec::with_capacity(size as usize);
            while let Some(chunk) = body.next().await? {
                hash.update(&chunk);
                buf.extend_from_slice(&chunk);
            }
            REQUESTS.put.fetch_add(1, Relaxed);
            dst_store.put(&to_key, PutPayload::from(buf)).await.map_err(|e| err(to, e))?
        } else {
            REQUESTS.put.fetch_add(1, Relaxed);
            let up = dst_store.put_multipart(&to_key).await.map_err(|e| err(to, e))?;
            let mut w = WriteMultipart::new_with_chunk_size(up, part);
            loop {
                let chunk = match body.next().await {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(e) => {
                        let _ = w.abort().await;
                        return Err(e);
                    }
                };
                if let Err(e) = w.wait_for_capacity(IN_FLIGHT).await {
                    let _ = w.abort().await;
                    return Err(err(to, e));
                }
                // Copied into the part's own buffer: the chunk may hold on to a larger
                // read buffer of the HTTP client, which is freed at once.
                hash.update(&chunk);
                w.write(&chunk);
            }
            REQUESTS.put.fetch_add(size.div_ceil(part as u64), Relaxed);
            w.finish().await.map_err(|e| err(to, e))?
        };
        let inode = identity(put.e_tag.as_deref(), put.version.as_deref());
        if inode != 0 {
            return Ok(Meta { size, mtime_ns: 0, inode, is_dir: false });
        }
        REQUESTS.head.fetch_add(1, Relaxed);
        let m = dst_store.head(&to_key).await.map_err(|e| err(to, e))?;
        Ok(to_meta(&m))
    })?;
    // The bytes went through flux: record their hash against the new object's identity.
    content::record(to, &meta, hash.finish());
    Ok(meta)
}

/// Download the remote object `from` to the local file `to`: streamed into a file beside
/// it, synced, then renamed over it (nothing there on failure).
pub fn download(from: &str, to: &Path) -> Result<(), String> {
    let (r, store, u) = open(from)?;
    let tmp = tmp_beside(to);
    let wr = |e: std::io::Error| format!("cannot write {}: {e}", tmp.display());
    let res = r.rt.block_on(async {
        let mut body = Body::open(&*store, obj_path(u.key), from).await?;
        let mut f = std::fs::File::create(&tmp).map_err(wr)?;
        while let Some(chunk) = body.next().await? {
            f.write_all(&chunk).map_err(wr)?;
        }
        f.sync_all().map_err(wr)
    });
    match res {
        Ok(()) => std::fs::rename(&tmp, to).map_err(|e| format!("cannot write {}: {e}", to.display())),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// The body of one GET, chunk by chunk, resumed where it broke off.
struct Body<'a> {
    store: &'a dyn ObjectStore,
    path: ObjPath,
    name: &'a str,
    e_tag: Option<String>,
    size: u64,
    offset: u64,
    /// Where the current request started.
    opened_at: u64,
    stream: BoxStream<'static, object_store::Result<Bytes>>,
}

impl<'a> Body<'a> {
    async fn open(store: &'a dyn ObjectStore, path: ObjPath, name: &'a str) -> Result<Body<'a>, String> {
        REQUESTS.get.fetch_add(1, Relaxed);
        let got = store.get(&path).await.map_err(|e| err(name, e))?;
        let (size, e_tag) = (got.meta.size, got.meta.e_tag.clone());
        Ok(Body { store, path, name, e_tag, size, offset: 0, opened_at: 0, stream: got.into_stream() })
    }

    /// The next chunk; `None` at the end of the object.
    async fn next(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            let e = match self.stream.next().await {
                Some(Ok(chunk)) => {
                    self.offset += chunk.len() as u64;
                    return Ok(Some(chunk));
                }
                None if self.offset >= self.size => return Ok(None),
                None => format!("{}: the body ended after {} of {} bytes", self.name, self.offset, self.size),
                Some(Err(e)) => err(self.name, e),
            };
            // object_store resumes a broken body itself, within its retry budget (which
            // counts from the first request, so a long download may outlast it). Past it,
            // flux asks for the rest again, of the same version only, as long as the last
            // request made progress.
            let Some(tag) = self.e_tag.clone() else { return Err(e) };
            if self.offset == self.opened_at {
                return Err(e);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let opts = GetOptions::default().with_range(Some(self.offset..self.size)).with_if_match(Some(tag));
            let got = self.store.get_opts(&self.path, opts).await.map_err(|e| err(self.name, e))?;
            self.stream = got.into_stream();
            self.opened_at = self.offset;
        }
    }
}
