//! The OCI image layout carried inside a bundle (`oci/`), and the rules that make it
//! importable by K3s/RKE2's containerd as it is.
//!
//! containerd imports an OCI layout tar only when it holds the `oci-layout` file, names
//! images by `io.containerd.image.name` (falling back to
//! `org.opencontainers.image.ref.name`, where a short name becomes a bare,
//! unresolvable image name), and fails the whole import when an index names a platform
//! whose blobs are missing. So every index entry carries the full reference under both
//! annotations, and only complete images are ever written.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;

pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_TYPE_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Content of the `oci-layout` file.
pub const OCI_LAYOUT_FILE: &[u8] = b"{\"imageLayoutVersion\":\"1.0.0\"}";

/// Media types whose content is already compressed; the writer does not spend zstd
/// effort on them.
pub fn is_compressed_layer(media_type: &str) -> bool {
    media_type.ends_with("+gzip") || media_type.ends_with("+zstd") || media_type.ends_with(".tar.gzip")
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Sha256Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    pub media_type: String,
    pub manifests: Vec<Descriptor>,
}

/// One image as it goes into the layout's `index.json`.
pub struct IndexImage<'a> {
    pub reference: &'a str,
    pub media_type: &'a str,
    pub digest: Sha256Digest,
    pub size: u64,
    /// A cosign object (`NAME:sha256-<hex>.sig`), not an image to run: named by
    /// `org.opencontainers.image.ref.name` only, so OCI layout readers find it by
    /// cosign's tag while containerd's import names only the images (see
    /// [`images_only_index`]).
    pub cosign_object: bool,
}

/// Builds `index.json` for the given images, each named by its full reference under
/// both annotations (cosign objects under the OCI one only). The order is the
/// caller's (the bundler sorts by reference).
pub fn build_index(images: &[IndexImage<'_>]) -> Vec<u8> {
    let manifests = images
        .iter()
        .map(|i| {
            let mut annotations = BTreeMap::from([(ANNOTATION_REF_NAME.to_string(), i.reference.to_string())]);
            if !i.cosign_object {
                annotations.insert(ANNOTATION_CONTAINERD_NAME.to_string(), i.reference.to_string());
            }
            Descriptor { media_type: i.media_type.to_string(), digest: i.digest, size: i.size, annotations }
        })
        .collect();
    let index = Index { schema_version: 2, media_type: MEDIA_TYPE_OCI_INDEX.into(), manifests };
    let mut v = serde_json::to_vec(&index).expect("index serializes");
    v.push(b'\n');
    v
}

/// The layout's `index.json` as containerd's import should see it: without the entries
/// that are not images (cosign objects, which have no `io.containerd.image.name`).
/// containerd names an entry without that annotation by its
/// `org.opencontainers.image.ref.name`, so a signature would show up as an image
/// `NAME:sha256-….sig` on every node. `None`: nothing to leave out, the bytes stay.
pub fn images_only_index(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut index: Index = serde_json::from_slice(bytes).ok()?;
    let before = index.manifests.len();
    index.manifests.retain(|d| d.annotations.contains_key(ANNOTATION_CONTAINERD_NAME));
    if index.manifests.len() == before {
        return None;
    }
    let mut v = serde_json::to_vec(&index).expect("index serializes");
    v.push(b'\n');
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosign_objects_are_named_for_layout_readers_but_left_out_of_containerds_import() {
        let image = |reference, cosign_object| IndexImage {
            reference,
            media_type: MEDIA_TYPE_OCI_MANIFEST,
            digest: Sha256Digest::of(reference.as_bytes()),
            size: 1,
            cosign_object,
        };
        let plain = build_index(&[image("example.com/app:1", false)]);
        assert_eq!(images_only_index(&plain), None, "an index of images only stays byte for byte");
        let both = build_index(&[image("example.com/app:1", false), image("example.com/app:sha256-ab.sig", true)]);
        let index: Index = serde_json::from_slice(&both).unwrap();
        let sig = &index.manifests[1].annotations;
        assert_eq!(sig.get(ANNOTATION_REF_NAME).map(String::as_str), Some("example.com/app:sha256-ab.sig"));
        assert!(!sig.contains_key(ANNOTATION_CONTAINERD_NAME));
        assert_eq!(images_only_index(&both), Some(plain));
    }
}
