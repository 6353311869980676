//! A forger of hostile bundles, for tests.
//!
//! `write_bundle` cannot produce a malformed bundle, but the reader's tests need
//! exactly those: entries the manifest does not list, `../` paths, links, devices,
//! lying sizes, bombs. The forger writes tar blocks byte by byte (so nothing the `tar`
//! crate would refuse to write is out of reach), signs any manifest with a throwaway
//! key, compresses with real zstd or with a hand-made zstd frame of raw and RLE blocks
//! (a terabyte of zeros in a few megabytes of file), and splits into parts. It also
//! writes the same content through the real writer, with the signed checksum sidecar,
//! for tests that damage genuine bundles.
//!
//! Shared by `format/tests/*.rs` and (through `#[path]`) `installer/tests/*.rs`, so it
//! only uses what both crates depend on: `airlock_format`, `tar`, `zstd`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use airlock_format::checksums;
use airlock_format::digest::Sha256Digest;
use airlock_format::frames::FrameWriter;
use airlock_format::manifest::{
    blob_path, Chart, Entry, FileArtifact, Image, Manifest, Profile, FORMAT_V1, MANIFEST_PATH, SIGNATURE_PATH,
};
use airlock_format::minisign::{PublicKey, SecretKey};
use airlock_format::parts::{part_path, BundleFiles};
use airlock_format::report::Silent;
use airlock_format::write::{write_bundle, Content, PlannedEntry, WriteOptions};
use tar::{EntryType, Header};

pub const BLOCK: usize = 512;
/// The largest zstd block (and the window the hand-made frames declare).
const ZSTD_BLOCK: usize = 128 << 10;
pub const GIB: u64 = 1 << 30;

// ---------------------------------------------------------------------------------
// Tar headers

/// A GNU header with `path` as raw name bytes (at most 100), no questions asked.
pub fn header(path: &[u8], ty: EntryType, mode: u32, size: u64) -> Header {
    let mut h = Header::new_gnu();
    set_name(&mut h, path);
    h.set_entry_type(ty);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    h
}

/// Writes raw name bytes (the `tar` crate refuses `..` and absolute paths).
/// Call `set_cksum` afterwards.
pub fn set_name(h: &mut Header, path: &[u8]) {
    let name = &mut h.as_old_mut().name;
    name.fill(0);
    name[..path.len()].copy_from_slice(path);
}

/// Writes raw link-name bytes. Call `set_cksum` afterwards.
pub fn set_link(h: &mut Header, target: &[u8]) {
    let link = &mut h.as_old_mut().linkname;
    link.fill(0);
    link[..target.len()].copy_from_slice(target);
}

// ---------------------------------------------------------------------------------
// Tar streams

enum Out {
    Frames(FrameWriter<Vec<u8>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    Frame(Frame),
}

/// Frame size of [`Tar::zstd`]: small, so the standard bundle spans several frames.
pub const FORGE_FRAME: usize = 48 << 10;

/// A tar stream being written and compressed as it goes.
pub struct Tar {
    out: Out,
    /// Uncompressed bytes written so far.
    pub len: u64,
}

impl Tar {
    /// Compressed as the bundler does (the bundler's frame writer, level 3), with
    /// frames of [`FORGE_FRAME`] bytes.
    pub fn zstd() -> Self {
        Self { out: Out::Frames(FrameWriter::with_frame_size(Vec::new(), 3, 2, FORGE_FRAME).unwrap()), len: 0 }
    }

    /// Real zstd in one frame (level 3, with the checksum), as bundles were written
    /// before they were cut into small frames; readers still take them.
    pub fn one_frame() -> Self {
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.include_checksum(true).unwrap();
        Self { out: Out::Zstd(enc), len: 0 }
    }

    /// A hand-made zstd frame: data in raw blocks, [`Tar::fill`] in RLE blocks of
    /// 128 KiB each (4 bytes of file per block), so gigantic streams cost nothing.
    pub fn frame() -> Self {
        Self::frame_with_window_log(17)
    }

    /// A hand-made frame that declares a window of 2^`log` bytes (10..=41).
    pub fn frame_with_window_log(log: u8) -> Self {
        Self { out: Out::Frame(Frame::new(log)), len: 0 }
    }

    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        match &mut self.out {
            Out::Frames(w) => w.write_all(bytes).unwrap(),
            Out::Zstd(e) => e.write_all(bytes).unwrap(),
            Out::Frame(f) => f.data(bytes),
        }
        self.len += bytes.len() as u64;
        self
    }

    /// `n` zero bytes, streamed (never held in memory).
    pub fn zeros(&mut self, n: u64) -> &mut Self {
        self.fill(0, n)
    }

    /// `n` copies of `byte`, streamed (never held in memory).
    pub fn fill(&mut self, byte: u8, n: u64) -> &mut Self {
        let out: &mut dyn Write = match &mut self.out {
            Out::Frames(w) => w,
            Out::Zstd(e) => e,
            Out::Frame(f) => {
                f.fill(byte, n);
                self.len += n;
                return self;
            }
        };
        let chunk = vec![byte; 1 << 20];
        let mut left = n;
        while left > 0 {
            let k = left.min(chunk.len() as u64) as usize;
            out.write_all(&chunk[..k]).unwrap();
            left -= k as u64;
        }
        self.len += n;
        self
    }

    pub fn header(&mut self, h: &Header) -> &mut Self {
        self.raw(h.as_bytes())
    }

    /// Entry data padded to whole blocks.
    pub fn data(&mut self, bytes: &[u8]) -> &mut Self {
        self.raw(bytes);
        let pad = (BLOCK - bytes.len() % BLOCK) % BLOCK;
        self.zeros(pad as u64)
    }

    /// A GNU long-name record (`././@LongLink`, type `L`) for the next entry.
    pub fn long_name(&mut self, name: &[u8]) -> &mut Self {
        let mut data = name.to_vec();
        data.push(0);
        self.header(&header(b"././@LongLink", EntryType::GNULongName, 0o644, data.len() as u64));
        self.data(&data)
    }

    /// Any entry with data; paths over 100 bytes get a GNU long-name record first,
    /// as GNU tar writes them.
    pub fn entry(&mut self, path: &[u8], ty: EntryType, mode: u32, data: &[u8]) -> &mut Self {
        if path.len() > 100 {
            self.long_name(path);
        }
        self.header(&header(&path[..path.len().min(100)], ty, mode, data.len() as u64));
        self.data(data)
    }

    /// A regular file.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.entry(path.as_bytes(), EntryType::Regular, mode, data)
    }

    /// A symbolic (`EntryType::Symlink`) or hard (`EntryType::Link`) link.
    pub fn link(&mut self, path: &str, ty: EntryType, target: &str) -> &mut Self {
        let mut h = header(path.as_bytes(), ty, 0o777, 0);
        set_link(&mut h, target.as_bytes());
        h.set_cksum();
        self.header(&h)
    }

    /// A character or block device, or a fifo.
    pub fn special(&mut self, path: &str, ty: EntryType) -> &mut Self {
        let mut h = header(path.as_bytes(), ty, 0o644, 0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        h.set_cksum();
        self.header(&h)
    }

    /// The end-of-archive marker: two zero blocks.
    pub fn end(&mut self) -> &mut Self {
        self.zeros(2 * BLOCK as u64)
    }

    /// The compressed bytes.
    pub fn finish(self) -> Vec<u8> {
        match self.out {
            Out::Frames(w) => w.finish().unwrap(),
            Out::Zstd(e) => e.finish().unwrap(),
            Out::Frame(f) => f.finish(),
        }
    }
}

/// A zstd frame made by hand (RFC 8878): no content size, no checksum, raw and RLE
/// blocks only.
struct Frame {
    bytes: Vec<u8>,
    pending: Vec<u8>,
}

impl Frame {
    fn new(window_log: u8) -> Self {
        assert!((10..=41).contains(&window_log));
        let mut bytes = 0xFD2F_B528u32.to_le_bytes().to_vec();
        bytes.push(0x00); // descriptor: no content size, window descriptor present
        bytes.push((window_log - 10) << 3); // exponent, mantissa 0
        Self { bytes, pending: Vec::new() }
    }

    fn block_header(&mut self, last: bool, ty: u32, size: usize) {
        let v = (last as u32) | (ty << 1) | ((size as u32) << 3);
        self.bytes.extend_from_slice(&v.to_le_bytes()[..3]);
    }

    fn flush_raw(&mut self, last: bool) {
        let pending = std::mem::take(&mut self.pending);
        for chunk in pending.chunks(ZSTD_BLOCK) {
            self.block_header(false, 0, chunk.len());
            self.bytes.extend_from_slice(chunk);
        }
        if last {
            self.block_header(true, 0, 0);
        }
    }

    fn data(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= ZSTD_BLOCK {
            self.flush_raw(false);
        }
    }

    fn fill(&mut self, byte: u8, n: u64) {
        if n < 4096 {
            self.data(&vec![byte; n as usize]);
            return;
        }
        self.flush_raw(false);
        let (full, rest) = (n / ZSTD_BLOCK as u64, (n % ZSTD_BLOCK as u64) as usize);
        let start = self.bytes.len();
        self.block_header(false, 1, ZSTD_BLOCK);
        self.bytes.push(byte);
        let block = self.bytes.split_off(start);
        self.bytes.extend_from_slice(&block.repeat(full as usize));
        if rest > 0 {
            self.block_header(false, 1, rest);
            self.bytes.push(byte);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.flush_raw(true);
        self.bytes
    }
}

// ---------------------------------------------------------------------------------
// Signed content

/// Deterministic, incompressible bytes (xorshift), so zstd stores them verbatim and a
/// flipped byte in the compressed file is a flipped byte of the content.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A manifest, the content of each of its entries, and the key that signs it.
pub struct Forge {
    pub key: Arc<SecretKey>,
    pub manifest: Manifest,
    pub contents: BTreeMap<String, Vec<u8>>,
}

/// The standard image's reference.
pub const IMAGE: &str = "docker.io/library/app:1.0";
pub const CHART: &str = "charts/hello-0.1.0.tgz";
pub const SCRIPT: &str = "files/k3s/install.sh";
pub const PROFILE: &str = "profiles/single.yaml";

impl Forge {
    /// A bundle of `files`, signed by a fresh key. Artifacts follow from the paths:
    /// `charts/NAME-VERSION.tgz` is a chart, `oci/blobs/sha256/…` are the blobs of one
    /// image (the first is its root), `profiles/NAME.yaml` a profile, anything else a
    /// file; `*.sh` is executable.
    pub fn new(files: &[(&str, &[u8])]) -> Self {
        Self::with_key(Arc::new(SecretKey::generate().unwrap()), files)
    }

    pub fn with_key(key: Arc<SecretKey>, files: &[(&str, &[u8])]) -> Self {
        let contents: BTreeMap<String, Vec<u8>> = files.iter().map(|(p, b)| (p.to_string(), b.to_vec())).collect();
        let entries: Vec<Entry> = contents
            .iter()
            .map(|(p, b)| Entry {
                path: p.clone(),
                size: b.len() as u64,
                sha256: Sha256Digest::of(b),
                executable: p.ends_with(".sh"),
            })
            .collect();
        let (mut charts, mut files, mut profiles, mut blobs) = (vec![], vec![], vec![], vec![]);
        for p in contents.keys() {
            let stem = p.rsplit('/').next().unwrap();
            if let Some(c) = p.strip_prefix("charts/").and_then(|c| c.strip_suffix(".tgz")) {
                let (name, version) = c.rsplit_once('-').unwrap();
                charts.push(Chart {
                    name: name.into(),
                    version: version.into(),
                    app_version: None,
                    component: "app".into(),
                    path: p.clone(),
                    values: None,
                });
            } else if p.starts_with("oci/blobs/sha256/") {
                blobs.push(contents[p].clone());
            } else if let Some(name) = p.strip_prefix("profiles/").and_then(|n| n.strip_suffix(".yaml")) {
                profiles.push(Profile { name: name.into(), path: p.clone() });
            } else {
                files.push(FileArtifact { name: stem.into(), component: "base".into(), path: p.clone() });
            }
        }
        let images = match blobs.first() {
            None => vec![],
            Some(root) => vec![Image {
                reference: IMAGE.into(),
                component: "app".into(),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                digest: Sha256Digest::of(root),
                size: root.len() as u64,
                platforms: vec!["linux/amd64".into()],
                blobs: blobs.iter().map(|b| Sha256Digest::of(b)).collect(),
                cosign: None,
            }],
        };
        let manifest = Manifest {
            format: FORMAT_V1.into(),
            name: "forged".into(),
            version: "1.0.0".into(),
            created: "2026-01-01T00:00:00Z".into(),
            distribution: None,
            installer: None,
            components: vec![],
            images,
            charts,
            files,
            profiles,
            key_statements: vec![],
            entries,
            base: None,
            base_entries: vec![],
            upgrade: None,
            monitoring: None,
            drill_checks: Vec::new(),
        };
        Self { key, manifest, contents }
    }

    /// A chart, an executable script, an image of two blobs and a profile; every
    /// content incompressible.
    pub fn standard() -> Self {
        Self::standard_with_key(Arc::new(SecretKey::generate().unwrap()))
    }

    pub fn standard_with_key(key: Arc<SecretKey>) -> Self {
        let root = format!("{{\"schemaVersion\":2,\"layers\":[\"{}\"]}}", hex_of(&noise(3, 16))).into_bytes();
        let layer = noise(4, 300_000);
        let (root_path, layer_path) = (blob(&root), blob(&layer));
        Self::with_key(
            key,
            &[
                (CHART, &noise(1, 60_000)),
                (SCRIPT, b"#!/bin/sh\necho install\n"),
                (&root_path, &root),
                (&layer_path, &layer),
                (PROFILE, b"distribution: k3s\ntopology: single\n"),
            ],
        )
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    pub fn manifest_bytes(&self) -> Vec<u8> {
        self.manifest.to_bytes()
    }

    /// A minisign signature (text) by this forge's key over `bytes`.
    pub fn sign(&self, bytes: &[u8]) -> String {
        self.key.sign(bytes, &self.manifest.trusted_comment(), "forged").unwrap().to_text()
    }

    /// The signature over the manifest.
    pub fn signature(&self) -> String {
        self.sign(&self.manifest_bytes())
    }

    /// Paths of the manifest's entries, in stream order.
    pub fn paths(&self) -> Vec<String> {
        self.manifest.entries.iter().map(|e| e.path.clone()).collect()
    }

    pub fn index(&self, path: &str) -> usize {
        self.manifest.entries.iter().position(|e| e.path == path).unwrap()
    }

    /// The two head entries: manifest and signature.
    pub fn head(&self, t: &mut Tar) {
        t.file(MANIFEST_PATH, 0o644, &self.manifest_bytes());
        t.file(SIGNATURE_PATH, 0o644, self.signature().as_bytes());
    }

    /// The entry at `path`, exactly as the manifest says.
    pub fn entry(&self, t: &mut Tar, path: &str) {
        let e = &self.manifest.entries[self.index(path)];
        t.file(&e.path, e.mode(), &self.contents[path]);
    }

    /// The entry at `path` with other content (same header size unless it changed).
    pub fn entry_with(&self, t: &mut Tar, path: &str, content: &[u8]) {
        let e = &self.manifest.entries[self.index(path)];
        t.file(&e.path, e.mode(), content);
    }

    /// The manifest's entries with indexes in `range`, as the manifest says.
    pub fn entries(&self, t: &mut Tar, range: impl RangeBounds<usize>) {
        let all = self.paths();
        let (lo, hi) = bounds(range, all.len());
        for p in &all[lo..hi] {
            self.entry(t, p);
        }
    }

    /// A tar stream (real zstd) with the head written; add entries and `end()`.
    pub fn tar(&self) -> Tar {
        let mut t = Tar::zstd();
        self.head(&mut t);
        t
    }

    /// [`Forge::tar`] on a hand-made frame, for gigantic zero runs.
    pub fn frame(&self) -> Tar {
        let mut t = Tar::frame();
        self.head(&mut t);
        t
    }

    /// The complete, genuine bundle (compressed bytes).
    pub fn good(&self) -> Vec<u8> {
        let mut t = self.tar();
        self.entries(&mut t, ..);
        t.end();
        t.finish()
    }

    /// The complete bundle with `path`'s content replaced by `content` (the tar
    /// header gives the new content's size).
    pub fn with_content(&self, path: &str, content: &[u8]) -> Vec<u8> {
        let mut t = self.tar();
        for p in self.paths() {
            if p == path {
                self.entry_with(&mut t, &p, content);
            } else {
                self.entry(&mut t, &p);
            }
        }
        t.end();
        t.finish()
    }

    /// Path of the largest blob (the standard image's layer).
    pub fn layer(&self) -> String {
        self.paths().into_iter().filter(|p| p.starts_with("oci/blobs/")).max_by_key(|p| self.contents[p].len()).unwrap()
    }

    /// The bundle through the real writer (`write_bundle`) at `dir/name`, split into
    /// parts of `split` bytes if given, with the signed checksum sidecar
    /// (`name.sha256` + `name.sha256.minisig`) as the bundler writes it.
    pub fn write(&self, dir: &Path, name: &str, split: Option<u64>) -> BundleFiles {
        let base = dir.join(name);
        let planned: Vec<PlannedEntry> = self
            .manifest
            .entries
            .iter()
            .map(|e| PlannedEntry {
                entry: e.clone(),
                content: Content::Bytes(self.contents[&e.path].clone()),
                precompressed: false,
            })
            .collect();
        let opts = WriteOptions { split_size: split, threads: 1, ..WriteOptions::default() };
        let parts =
            write_bundle(&base, &self.manifest_bytes(), self.signature().as_bytes(), &planned, &opts, &Silent).unwrap();
        let list: Vec<(String, Sha256Digest)> =
            parts.iter().map(|p| (p.path.file_name().unwrap().to_string_lossy().into_owned(), p.sha256)).collect();
        let text = checksums::render(&list);
        fs::write(checksums::sidecar_path(&base), &text).unwrap();
        let sig = self.key.sign(text.as_bytes(), &format!("airlock checksums: {name}"), "forged").unwrap();
        fs::write(checksums::signature_path(&base), sig.to_text()).unwrap();
        BundleFiles::locate(&base).unwrap()
    }
}

fn bounds(range: impl RangeBounds<usize>, len: usize) -> (usize, usize) {
    use std::ops::Bound::*;
    let lo = match range.start_bound() {
        Included(&n) => n,
        Excluded(&n) => n + 1,
        Unbounded => 0,
    };
    let hi = match range.end_bound() {
        Included(&n) => n + 1,
        Excluded(&n) => n,
        Unbounded => len,
    };
    (lo, hi)
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `content` with one bit of the byte at `at` inverted.
pub fn flipped(content: &[u8], at: usize) -> Vec<u8> {
    let mut v = content.to_vec();
    v[at] ^= 0x01;
    v
}

/// The bundle path of a blob with this content.
pub fn blob(content: &[u8]) -> String {
    blob_path(&Sha256Digest::of(content))
}

// ---------------------------------------------------------------------------------
// Files on disk

/// Writes `bytes` as the single-file bundle `dir/name`.
pub fn save(dir: &Path, name: &str, bytes: &[u8]) -> BundleFiles {
    let base = dir.join(name);
    fs::write(&base, bytes).unwrap();
    BundleFiles::locate(&base).unwrap()
}

/// Writes `bytes` as parts `dir/name.part001…` of `part_size` bytes each.
pub fn save_split(dir: &Path, name: &str, bytes: &[u8], part_size: usize) -> BundleFiles {
    let base = dir.join(name);
    for (i, chunk) in bytes.chunks(part_size).enumerate() {
        fs::write(part_path(&base, i + 1), chunk).unwrap();
    }
    BundleFiles::locate(&base).unwrap()
}

/// Inverts the bits of the byte at `offset` of the file at `path`.
pub fn flip_byte(path: &Path, offset: u64) {
    let mut b = fs::read(path).unwrap();
    b[offset as usize] ^= 0xff;
    fs::write(path, b).unwrap();
}

/// Offset of the first occurrence of `needle` in the file at `path`.
pub fn find_in_file(path: &Path, needle: &[u8]) -> Option<u64> {
    let hay = fs::read(path).unwrap();
    hay.windows(needle.len()).position(|w| w == needle).map(|p| p as u64)
}

/// Every path under `dir` (files, directories, links), relative, sorted.
pub fn listing(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let ty = e.file_type().unwrap();
            out.push(e.path().strip_prefix(root).unwrap().to_path_buf());
            if ty.is_dir() {
                walk(root, &e.path(), out);
            }
        }
    }
    let mut out = vec![];
    walk(dir, dir, &mut out);
    out.sort();
    out
}
