//! The local blob cache shared by every build on this machine.
//!
//! Layout: `blobs/sha256/<hex>` (complete, verified blobs, named by digest, exactly an
//! OCI layout's blob directory) and `partial/<hex>` (downloads in progress, kept
//! across runs so an interrupted download resumes where it stopped). A blob enters
//! `blobs/` only by rename after its digest was checked, so a reader never sees a
//! half-written blob. Builds read layers straight from the cache (never copied).
//!
//! Two builds sharing one cache at the same moment may download the same blob twice;
//! the renames are atomic, so the result is still correct.

use std::path::{Path, PathBuf};

use airlock_format::error::{Error, IoContext, Result};
use airlock_format::write::Content;
use airlock_format::Sha256Digest;

use crate::sources::oci_layout::BlobStore;

#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// Opens (creating if needed) the cache at `root`.
    pub fn open(root: &Path) -> Result<Self> {
        for sub in ["blobs/sha256", "partial"] {
            let d = root.join(sub);
            std::fs::create_dir_all(&d)
                .at(&d)
                .map_err(|e| e.with_hint("choose another cache directory with --cache-dir (or set XDG_CACHE_HOME)"))?;
        }
        Ok(Self { root: root.to_path_buf() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, d: &Sha256Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn partial_path(&self, d: &Sha256Digest) -> PathBuf {
        self.root.join("partial").join(d.hex())
    }

    /// Whether the complete blob is cached with the expected size.
    pub fn has(&self, d: &Sha256Digest, size: u64) -> bool {
        std::fs::metadata(self.blob_path(d)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    /// Small documents (manifests) already verified against `d`: written atomically.
    pub fn put(&self, d: &Sha256Digest, bytes: &[u8]) -> Result<()> {
        let dest = self.blob_path(d);
        if dest.is_file() {
            return Ok(());
        }
        let tmp = self.root.join("partial").join(format!("{}.{}.json", d.hex(), std::process::id()));
        std::fs::write(&tmp, bytes).at(&tmp)?;
        std::fs::rename(&tmp, &dest).at(&dest)
    }

    /// Reads a cached small document, checking its digest (the cache is only a file
    /// tree; anything may have touched it).
    pub fn get_verified(&self, d: &Sha256Digest) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.blob_path(d)).ok()?;
        (Sha256Digest::of(&bytes) == *d).then_some(bytes)
    }
}

impl BlobStore for Cache {
    fn location(&self) -> &Path {
        &self.root
    }

    fn syntax(&self) -> String {
        "docker://REFERENCE".into()
    }

    fn file(&self, _name: &str) -> Result<Option<Content>> {
        Ok(None)
    }

    fn blob(&self, digest: &Sha256Digest) -> Result<Option<(Content, u64)>> {
        let p = self.blob_path(digest);
        match std::fs::metadata(&p) {
            Ok(m) if m.is_file() => Ok(Some((Content::File(p), m.len()))),
            Ok(_) => Err(Error::corrupt(p.display().to_string(), "is not a regular file")
                .with_hint("remove it from the cache; the next build downloads it again")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&p, e)),
        }
    }
}
