//! OCI archives (`oci-archive:FILE[:NAME]`): an uncompressed tar of an OCI image
//! layout, read in place.
//!
//! The archive is indexed once (names, data offsets and sizes of its members, seeking
//! over the data rather than reading it), and every blob becomes a byte range of the
//! archive file. Compressed archives are refused with a hint instead of being unpacked
//! to a scratch directory: that is the `/tmp` filling up other tools are known for.
//! The member index is shared with the docker-archive reader.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use airlock_format::error::{Error, IoContext, Result};
use airlock_format::write::Content;
use airlock_format::Sha256Digest;

use super::oci_layout::{self, BlobStore};
use super::{Ctx, Resolved};

/// The kind of a tar member, with link targets kept for resolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum MemberKind {
    File,
    Dir,
    /// Target relative to the link's own directory (or absolute).
    Symlink(String),
    /// Target as an archive path.
    Hardlink(String),
    /// Devices, fifos, sparse files: never usable as blobs.
    Other(char),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    pub offset: u64,
    pub size: u64,
    pub kind: MemberKind,
}

/// Every member of an uncompressed tar, by normalized path (no `./`, no trailing `/`).
pub(crate) struct TarIndex {
    pub path: PathBuf,
    members: BTreeMap<String, Member>,
}

/// Names the compression a file starts with, if any.
pub(crate) fn sniff_compression(magic: &[u8]) -> Option<&'static str> {
    if magic.starts_with(&[0x1f, 0x8b]) {
        Some("gzip")
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd")
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Some("xz")
    } else if magic.starts_with(b"BZh") {
        Some("bzip2")
    } else {
        None
    }
}

/// Normalizes a path inside an archive lexically: drops `.` and empty components,
/// applies `..`. `None` when it climbs above the root.
pub(crate) fn normalize_member_path(p: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out.join("/"))
}

#[cfg(test)]
thread_local! {
    /// How often this thread indexed a tar: the regression tests pin that an archive is
    /// read once however many images are taken from it.
    pub(crate) static TAR_INDEXES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl TarIndex {
    /// Indexes `path`, refusing compressed files with a hint to decompress them.
    pub fn open(path: &Path) -> Result<Self> {
        #[cfg(test)]
        TAR_INDEXES.with(|c| c.set(c.get() + 1));
        let mut file = File::open(path).at(path)?;
        let mut magic = [0u8; 6];
        let n = read_up_to(&mut file, &mut magic).at(path)?;
        if let Some(kind) = sniff_compression(&magic[..n]) {
            let tool = match kind {
                "gzip" => "gunzip -k",
                "zstd" => "zstd -d",
                "xz" => "unxz -k",
                _ => "bunzip2 -k",
            };
            return Err(Error::input(
                path.display().to_string(),
                format!(
                    "is a {kind}-compressed archive; image archives are read in place and must be uncompressed tar"
                ),
            )
            .with_hint(format!("decompress it first (`{tool} {}`) and point `from:` at the .tar", path.display())));
        }
        let file = File::open(path).at(path)?;
        let mut archive = tar::Archive::new(file);
        let mut members = BTreeMap::new();
        let not_tar = |e: std::io::Error| {
            Error::input(path.display().to_string(), format!("is not a readable tar archive: {e}"))
                .with_hint("give an uncompressed tar written by skopeo, docker save or tar")
                .with_source(e)
        };
        for entry in archive.entries_with_seek().map_err(not_tar)? {
            let entry = entry.map_err(not_tar)?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(name) = normalize_member_path(&raw) else {
                continue;
            };
            if name.is_empty() {
                continue;
            }
            let link = || entry.link_name_bytes().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
            let et = entry.header().entry_type();
            let kind = if et.is_file() || et.is_contiguous() {
                MemberKind::File
            } else if et.is_dir() {
                MemberKind::Dir
            } else if et.is_symlink() {
                MemberKind::Symlink(link())
            } else if et.is_hard_link() {
                MemberKind::Hardlink(link())
            } else if et.is_pax_global_extensions() || et.is_pax_local_extensions() {
                continue;
            } else {
                MemberKind::Other(et.as_byte() as char)
            };
            // Later members replace earlier ones, as tar extraction would.
            members.insert(name, Member { offset: entry.raw_file_position(), size: entry.size(), kind });
        }
        Ok(Self { path: path.to_path_buf(), members })
    }

    /// The regular-file member `name` refers to, following symlinks and hard links.
    pub fn file(&self, name: &str) -> Option<&Member> {
        let mut name = normalize_member_path(name)?;
        for _ in 0..32 {
            let m = self.members.get(&name)?;
            name = match &m.kind {
                MemberKind::File => return Some(m),
                MemberKind::Symlink(target) => {
                    let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                    let joined = if target.starts_with('/') { target.clone() } else { format!("{dir}/{target}") };
                    normalize_member_path(&joined)?
                }
                MemberKind::Hardlink(target) => normalize_member_path(target)?,
                MemberKind::Dir | MemberKind::Other(_) => return None,
            };
        }
        None
    }

    /// Whether a member of that name exists (of any kind).
    pub fn has(&self, name: &str) -> bool {
        normalize_member_path(name).is_some_and(|n| self.members.contains_key(&n))
    }

    pub fn content(&self, m: &Member) -> Content {
        Content::FileRange { path: self.path.clone(), offset: m.offset, len: m.size }
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A layout stored in a tar.
pub(crate) struct ArchiveStore {
    pub tar: TarIndex,
    /// `oci-archive` or `docker-archive`, for the hint syntax.
    pub transport: &'static str,
}

impl BlobStore for ArchiveStore {
    fn location(&self) -> &Path {
        &self.tar.path
    }

    fn syntax(&self) -> String {
        format!("{}:{}", self.transport, self.tar.path.display())
    }

    fn file(&self, name: &str) -> Result<Option<Content>> {
        Ok(self.tar.file(name).map(|m| self.tar.content(m)))
    }

    fn blob(&self, digest: &Sha256Digest) -> Result<Option<(Content, u64)>> {
        let name = format!("blobs/sha256/{}", digest.hex());
        match self.tar.file(&name) {
            Some(m) => Ok(Some((self.tar.content(m), m.size))),
            None if self.tar.has(&name) => Err(Error::corrupt(
                format!("{}: {name}", self.tar.path.display()),
                "is not a regular file (or a link to one)",
            )
            .with_hint("a layout blob must be a file; write the archive again with skopeo")),
            None => Ok(None),
        }
    }
}

/// An OCI archive read once: its members and its layout's index, for every image
/// taken from it.
pub(crate) struct OpenArchive {
    store: ArchiveStore,
    index: oci_layout::LayoutIndex,
}

/// Indexes the archive and reads its layout's index.
pub(crate) fn open(file: &Path, ctx: &Ctx) -> Result<OpenArchive> {
    let tar = TarIndex::open(file).map_err(|e| e.within(ctx.subject()))?;
    let store = ArchiveStore { tar, transport: "oci-archive" };
    let index = oci_layout::LayoutIndex::read(&store, ctx)?;
    Ok(OpenArchive { store, index })
}

/// The image `selector` names (or the only one) in an opened archive.
pub(crate) fn resolve(archive: &OpenArchive, selector: Option<&str>, ctx: &Ctx) -> Result<Resolved> {
    oci_layout::resolve_in(&archive.store, &archive.index, selector, ctx)
}

#[cfg(test)]
mod tests {
    use super::super::load_image;
    use super::super::testutil::*;
    use super::*;
    use airlock_format::ErrorKind;

    #[test]
    fn member_paths_normalize_and_refuse_escapes() {
        assert_eq!(normalize_member_path("./blobs/sha256/ab").as_deref(), Some("blobs/sha256/ab"));
        assert_eq!(normalize_member_path("blobs//x/").as_deref(), Some("blobs/x"));
        assert_eq!(normalize_member_path("a/../b").as_deref(), Some("b"));
        assert_eq!(normalize_member_path("../b"), None);
    }

    #[test]
    fn archive_layers_are_byte_ranges_of_the_archive_and_documents_the_bytes_read() {
        let t = tempfile::tempdir().unwrap();
        let mut l = Layout::new();
        let img = l.image("linux", "amd64", None, &[b"layer one", b"layer two"]);
        l.name(&img, "docker.io/lab/app:1");
        let tar = l.write_archive(t.path(), "app.tar", true);
        let got = load_image(&spec("lab/app:1", "oci-archive:app.tar"), t.path()).unwrap();
        assert_eq!(got.digest, img.digest);
        assert_eq!(got.reference, "docker.io/lab/app:1");
        assert_eq!(got.platforms, vec!["linux/amd64"]);
        assert_eq!(got.blobs.len(), 4);
        for b in &got.blobs {
            if img.layers.contains(&b.digest) {
                assert!(matches!(&b.content, Content::FileRange { path, .. } if *path == tar), "{b:?}");
            } else {
                // Manifest and config were read and checked while loading: carried as is.
                assert!(matches!(&b.content, Content::Bytes(_)), "{b:?}");
            }
            assert_eq!(Sha256Digest::of(&read_blob(&b.content)), b.digest);
        }
    }

    #[test]
    fn archive_layer_behind_symlink_and_hardlink_resolves() {
        let t = tempfile::tempdir().unwrap();
        let mut l = Layout::new();
        let img = l.image("linux", "amd64", None, &[b"linked layer"]);
        l.name(&img, "x");
        // Store the layer under another name and link the blob path to it.
        let layer = img.layers[0];
        let stored = l.blobs.remove(&layer).unwrap();
        l.extra_files.push(("store/real".into(), stored));
        l.links.push((format!("blobs/sha256/{}", layer.hex()), "../../store/real".into(), false));
        l.write_archive(t.path(), "a.tar", false);
        let got = load_image(&spec("x", "oci-archive:a.tar"), t.path()).unwrap();
        let b = got.blobs.iter().find(|b| b.digest == layer).unwrap();
        assert_eq!(read_blob(&b.content), b"linked layer");

        let mut l2 = Layout::new();
        let img = l2.image("linux", "amd64", None, &[b"hard layer"]);
        l2.name(&img, "x");
        let layer = img.layers[0];
        let stored = l2.blobs.remove(&layer).unwrap();
        l2.extra_files.push(("store/real".into(), stored));
        l2.links.push((format!("blobs/sha256/{}", layer.hex()), "store/real".into(), true));
        l2.write_archive(t.path(), "b.tar", false);
        let got = load_image(&spec("x", "oci-archive:b.tar"), t.path()).unwrap();
        let b = got.blobs.iter().find(|b| b.digest == layer).unwrap();
        assert_eq!(read_blob(&b.content), b"hard layer");
    }

    #[test]
    fn compressed_archive_is_refused_with_a_hint() {
        let t = tempfile::tempdir().unwrap();
        let mut l = Layout::new();
        let img = l.image("linux", "amd64", None, &[b"l"]);
        l.name(&img, "x");
        let tar = l.write_archive(t.path(), "a.tar", false);
        let bytes = std::fs::read(&tar).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &bytes).unwrap();
        std::fs::write(t.path().join("a.tar.gz"), gz.finish().unwrap()).unwrap();
        let mut zst = vec![0x28, 0xb5, 0x2f, 0xfd];
        zst.extend_from_slice(&[0; 32]);
        std::fs::write(t.path().join("a.tar.zst"), zst).unwrap();
        for (file, kind, tool) in [("a.tar.gz", "gzip", "gunzip"), ("a.tar.zst", "zstd", "zstd -d")] {
            for transport in ["oci-archive", "docker-archive"] {
                let e = load_image(&spec("x", &format!("{transport}:{file}")), t.path()).unwrap_err();
                assert_eq!(e.kind, ErrorKind::Input, "{e}");
                assert!(e.cause.contains(kind), "{e}");
                assert!(e.subject.contains(file) && e.subject.contains("docker.io/library/x:latest"), "{e}");
                assert!(e.hint.as_deref().unwrap().contains(tool), "{e}");
            }
        }
    }

    #[test]
    fn archive_without_oci_layout_file_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let mut l = Layout::new();
        let img = l.image("linux", "amd64", None, &[b"l"]);
        l.name(&img, "x");
        l.omit_oci_layout = true;
        l.write_archive(t.path(), "a.tar", false);
        let e = load_image(&spec("x", "oci-archive:a.tar"), t.path()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Input);
        assert!(e.cause.contains("oci-layout"), "{e}");
    }

    #[test]
    fn missing_archive_file_is_an_io_error_naming_it() {
        let t = tempfile::tempdir().unwrap();
        let e = load_image(&spec("x", "oci-archive:nope.tar"), t.path()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Io);
        assert!(e.subject.contains("nope.tar"), "{e}");
    }
}
