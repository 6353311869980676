//! The bundler's readers: OCI layouts, OCI and docker archives, Helm repository
//! indexes, charts and their `Chart.yaml`.

use std::io::Write;
use std::path::{Component, Path};

use airlock_bundler::registry::charts::chart_in_index;
use airlock_bundler::sources::{load_chart, load_image, ImageSpec};

use crate::bytes::Input;

/// A relative path made of plain components, or `None`.
fn plain_relative(name: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(name).ok()?;
    let p = Path::new(s);
    (!s.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)))).then_some(s)
}

/// Writes `[name piece][content piece]...` as files under `dir` (names that are not
/// plain relative paths are skipped; a name ending in `@` becomes a symlink to the
/// content, so layouts with links in and out are read too).
pub fn write_tree(dir: &Path, input: &mut Input<'_>) {
    while !input.is_empty() {
        let name = input.piece();
        let content = input.piece();
        let (name, link) = match name.strip_suffix(b"@") {
            Some(n) => (n, true),
            None => (name, false),
        };
        let Some(rel) = plain_relative(name) else { continue };
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            if std::fs::create_dir_all(parent).is_err() {
                continue;
            }
        }
        if link {
            if let Ok(target) = std::str::from_utf8(content) {
                let _ = std::os::unix::fs::symlink(target, &path);
            }
        } else {
            let _ = std::fs::write(&path, content);
        }
    }
}

/// Encodes files the way [`write_tree`] reads them (for seeds).
pub fn tree_input(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut v = Vec::new();
    for (n, c) in files {
        crate::bytes::piece(&mut v, n.as_bytes());
        crate::bytes::piece(&mut v, c);
    }
    v
}

/// OCI image sources. Mode byte % 3: 0 an `oci-archive:` tar, 1 a `docker-archive:`
/// tar (the rest of the input is the tar), 2 an `oci:` layout directory (the rest is a
/// file list for [`write_tree`]). Bit 2 of the mode adds a selector. Nothing panics;
/// an image that loads lists each blob once, sorted, its root among them.
pub fn oci(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte();
    let dir = tempfile::tempdir().expect("tempdir");
    let kind = mode % 3;
    let from = match kind {
        0 | 1 => {
            let file = dir.path().join("image.tar");
            std::fs::write(&file, input.rest()).expect("write archive");
            let t = if kind == 0 { "oci-archive" } else { "docker-archive" };
            format!("{t}:{}", file.display())
        }
        _ => {
            let layout = dir.path().join("layout");
            std::fs::create_dir(&layout).expect("layout dir");
            write_tree(&layout, &mut input);
            format!("oci:{}", layout.display())
        }
    };
    let from = if mode & 4 != 0 { format!("{from}:fuzz") } else { from };
    let platforms = (mode & 8 != 0).then(|| vec!["linux/amd64".to_string()]);
    let spec = ImageSpec { reference: "registry.example.com/fuzz/app:1".into(), from, platforms };
    let Ok(img) = load_image(&spec, dir.path()) else { return };
    assert!(img.blobs.windows(2).all(|w| w[0].digest < w[1].digest), "blobs sorted and unique");
    assert!(img.blobs.iter().any(|b| b.digest == img.digest), "root among the blobs");
}

/// The Helm repository index: `[name piece][version piece]` then the index bytes.
/// Nothing panics; a chart found has a URL under the repository or an absolute one.
pub fn helm_index(data: &[u8]) {
    let mut input = Input::new(data);
    let name = String::from_utf8_lossy(input.piece()).into_owned();
    let version = String::from_utf8_lossy(input.piece()).into_owned();
    let base = "https://charts.example.com/stable";
    if let Ok((url, _digest)) = chart_in_index(input.rest(), base, &name, &version, "fuzz") {
        assert!(url.contains("://"), "relative URL {url:?} left relative");
    }
}

/// A gzipped tar of `files` (paths inside the archive as given).
pub fn tgz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, name, *data).expect("tar");
    }
    tar.into_inner().expect("tar").finish().expect("gzip")
}

/// Charts and `Chart.yaml`. Mode byte % 3: 0 the rest is a `Chart.yaml` packed as
/// `c/Chart.yaml` in a `.tgz`; 1 the rest is the `.tgz` itself; 2 the rest is a file
/// list for [`write_tree`], a chart directory that is packaged. Nothing panics; a
/// chart that loads has a name and version, and its size and digest are its bytes'.
pub fn chart(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte();
    let dir = tempfile::tempdir().expect("tempdir");
    let kind = mode % 3;
    let path = match kind {
        0 | 1 => {
            let bytes = if kind == 0 {
                tgz(&[("c/Chart.yaml", input.rest()), ("c/values.yaml", b"a: 1\n")])
            } else {
                input.rest().to_vec()
            };
            let p = dir.path().join("c.tgz");
            std::fs::File::create(&p).and_then(|mut f| f.write_all(&bytes)).expect("write chart");
            p
        }
        _ => {
            let p = dir.path().join("c");
            std::fs::create_dir(&p).expect("chart dir");
            write_tree(&p, &mut input);
            p
        }
    };
    let Ok(chart) = load_chart(&path, 0) else { return };
    assert!(!chart.name.is_empty() && !chart.version.is_empty(), "a chart without name or version loaded");
    let (digest, size) = chart.content.measure().expect("chart content readable");
    assert_eq!((digest, size), (chart.sha256, chart.size), "chart digest and size");
}
