//! The image archive K3s and RKE2 import from `agent/images/`.
//!
//! containerd's import wants an OCI layout tar that holds the `oci-layout` file, with
//! every index entry named by its full reference (see `airlock_format::oci`), and reads
//! `.tar.zst` with a decoder capped at a 2^25 window. The bundle's staged `oci/`
//! directory already has that shape, so it is written out as it is.

// Staging: writes only below the staging directory the host resolved under the root
// (`Host::resolve_dir`) or a directory the operator named (`extract -d`), never at a
// target path; clippy.toml refuses these calls everywhere else.
#![allow(clippy::disallowed_methods)]

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use airlock_format::error::{Error, IoContext, Result};

/// How to compress the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// `.tar`: nothing to decode at import.
    None,
    /// `.tar.zst` with a window of at most 2^25 (containerd's decoder limit).
    Zstd { level: i32 },
}

/// Largest zstd window containerd's import decoder accepts (32 MiB).
pub const MAX_IMPORT_WINDOW_LOG: u32 = 25;
/// The window we use: well inside the limit, and little memory on either side.
const IMPORT_WINDOW_LOG: u32 = 23;
const _: () = assert!(IMPORT_WINDOW_LOG <= MAX_IMPORT_WINDOW_LOG);

/// Writes the staged OCI layout `layout` as an importable archive at `out`. The file
/// appears only when complete (written as `out.partial`, then renamed).
pub fn write_image_archive(layout: &Path, out: &Path, compression: Compression, mtime: u64) -> Result<()> {
    for required in ["oci-layout", "index.json"] {
        if !layout.join(required).is_file() {
            return Err(Error::input(
                layout.display().to_string(),
                format!("not an OCI layout: `{required}` is missing"),
            ));
        }
    }
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    let result = (|| -> Result<()> {
        let file = BufWriter::with_capacity(1 << 20, File::create(&tmp).at(&tmp)?);
        match compression {
            Compression::None => {
                let w = write_tar(layout, file, mtime)?;
                finish_file(w.into_inner().map_err(|e| Error::io(&tmp, e.into_error()))?, &tmp)
            }
            Compression::Zstd { level } => {
                let mut enc = zstd::stream::write::Encoder::new(file, level).at(&tmp)?;
                enc.window_log(IMPORT_WINDOW_LOG).at(&tmp)?;
                enc.include_checksum(true).at(&tmp)?;
                let enc = write_tar(layout, enc, mtime)?;
                let file = enc.finish().at(&tmp)?;
                finish_file(file.into_inner().map_err(|e| Error::io(&tmp, e.into_error()))?, &tmp)
            }
        }
    })();
    match result {
        Ok(()) => fs::rename(&tmp, out).at(out),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn finish_file(f: File, path: &Path) -> Result<()> {
    f.sync_all().at(path)
}

fn write_tar<W: Write>(layout: &Path, w: W, mtime: u64) -> Result<W> {
    let mut tar = tar::Builder::new(w);
    let mut names: Vec<String> = vec!["oci-layout".into(), "index.json".into()];
    let blobs = layout.join("blobs/sha256");
    let mut hexes: Vec<String> = match fs::read_dir(&blobs) {
        Ok(rd) => rd
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()
            .at(&blobs)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => return Err(Error::io(&blobs, e)),
    };
    hexes.sort();
    names.extend(hexes.into_iter().map(|h| format!("blobs/sha256/{h}")));
    for name in names {
        let src = layout.join(&name);
        if name == "index.json" {
            // Cosign objects stay out of what containerd imports as images.
            let bytes = fs::read(&src).at(&src)?;
            if let Some(images) = airlock_format::oci::images_only_index(&bytes) {
                let mut h = tar::Header::new_gnu();
                h.set_size(images.len() as u64);
                h.set_mode(0o644);
                h.set_mtime(mtime);
                h.set_uid(0);
                h.set_gid(0);
                h.set_entry_type(tar::EntryType::Regular);
                tar.append_data(&mut h, &name, images.as_slice()).at(&src)?;
                continue;
            }
        }
        let f = File::open(&src).at(&src)?;
        let len = f.metadata().at(&src)?.len();
        let mut h = tar::Header::new_gnu();
        h.set_size(len);
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, &name, f).at(&src)?;
    }
    tar.into_inner().at(layout)
}
