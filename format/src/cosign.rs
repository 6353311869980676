//! Cosign signatures of container images, checked offline against a public key.
//!
//! What `cosign sign --key cosign.key --tlog-upload=false IMAGE` leaves in the image's
//! repository: a manifest tagged `sha256-<hex of the image's digest>.sig` whose layers
//! are *simple signing* payloads (media type [`SIMPLE_SIGNING_MEDIA_TYPE`]), each
//! with its signature in the layer's [`SIGNATURE_ANNOTATION`]: base64 of an ASN.1 DER
//! ECDSA signature over the payload bytes with SHA-256. The payload names the signed
//! image by digest (`critical.image.docker-manifest-digest`). A signature is good when
//! the payload's bytes are the layer's digest, the signature verifies with one of the
//! given keys, and the payload names this image's digest. No transparency log is asked:
//! the key is what the vendor trusts.
//!
//! Keys are cosign's default, ECDSA P-256 public keys in PEM (`-----BEGIN PUBLIC
//! KEY-----`, an X.509 SubjectPublicKeyInfo). The verification is `ring`'s, already
//! the bundle signature's crypto library; the payload check is ours and small.

use std::fmt;

use base64::Engine;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};
use serde::Deserialize;

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};

/// The media type of a simple signing payload layer.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The payload's `critical.type`.
const PAYLOAD_TYPE: &str = "cosign container image signature";

/// SubjectPublicKeyInfo of an EC public key on P-256, up to the key's bit string:
/// SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (66 bytes, 0 unused) }.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The PEM (`PUBLIC KEY`) of a P-256 public key given as its uncompressed point, as
/// `cosign generate-key-pair` writes `cosign.pub`.
pub fn p256_public_key_pem(point: &[u8]) -> String {
    let mut der = P256_SPKI_PREFIX.to_vec();
    der.extend_from_slice(point);
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    )
}

/// The tag cosign stores an image's signatures under.
pub fn signature_tag(image: &Sha256Digest) -> String {
    format!("sha256-{}.sig", image.hex())
}

/// The tag cosign stores an image's attestations under.
pub fn attestation_tag(image: &Sha256Digest) -> String {
    format!("sha256-{}.att", image.hex())
}

/// A cosign public key (ECDSA P-256).
#[derive(Clone, PartialEq, Eq)]
pub struct CosignKey {
    /// The uncompressed SEC1 point (`04 || X || Y`).
    point: Vec<u8>,
    /// The PEM text it was read from (carried in bundles).
    pub pem: String,
    /// Where it came from, for messages (`keys/upstream.pub`).
    pub name: String,
}

impl fmt::Debug for CosignKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CosignKey({}, {})", self.name, self.fingerprint())
    }
}

impl CosignKey {
    /// Reads a PEM `PUBLIC KEY` as `cosign generate-key-pair` writes `cosign.pub`.
    pub fn from_pem(text: &str, name: &str) -> Result<Self> {
        let bad = |cause: &str| {
            Error::input(name, cause.to_string())
                .with_hint("give the cosign public key (cosign.pub: -----BEGIN PUBLIC KEY-----, ECDSA P-256)")
        };
        let body = text
            .split("-----BEGIN PUBLIC KEY-----")
            .nth(1)
            .and_then(|rest| rest.split("-----END PUBLIC KEY-----").next())
            .ok_or_else(|| bad("is not a PEM public key"))?;
        let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| bad("is not valid base64 PEM"))?;
        let point = der.strip_prefix(&P256_SPKI_PREFIX[..]).ok_or_else(|| bad("is not an ECDSA P-256 public key"))?;
        if point.len() != 65 || point[0] != 0x04 {
            return Err(bad("holds no uncompressed P-256 point"));
        }
        Ok(Self { point: point.to_vec(), pem: text.to_string(), name: name.to_string() })
    }

    /// `sha256:` of the key's SubjectPublicKeyInfo, to tell keys apart in reports.
    pub fn fingerprint(&self) -> Sha256Digest {
        let mut der = P256_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.point);
        Sha256Digest::of(&der)
    }

    fn verifies(&self, message: &[u8], signature_der: &[u8]) -> bool {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.point).verify(message, signature_der).is_ok()
    }
}

#[derive(Deserialize)]
struct SigManifest {
    #[serde(default)]
    layers: Vec<SigLayer>,
}

#[derive(Deserialize)]
struct SigLayer {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: Sha256Digest,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    #[serde(rename = "type")]
    kind: String,
    image: PayloadImage,
}

#[derive(Deserialize)]
struct PayloadImage {
    #[serde(rename = "docker-manifest-digest")]
    digest: String,
}

/// A signature that verified: which key, over which payload layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub key: String,
    pub key_fingerprint: Sha256Digest,
    /// The simple signing layer.
    pub payload: Sha256Digest,
    pub payload_bytes: Vec<u8>,
    /// The signature as the annotation held it (base64).
    pub signature: String,
}

/// Why a payload does not sign `digest` with `key`; `None`: it does.
fn payload_problem(key: &CosignKey, digest: &Sha256Digest, payload: &[u8], sig_der: &[u8]) -> Option<String> {
    if !key.verifies(payload, sig_der) {
        return Some(format!("the signature does not verify with {}", key.name));
    }
    let p: Payload = match serde_json::from_slice(payload) {
        Ok(p) => p,
        Err(e) => return Some(format!("not a simple signing payload ({e})")),
    };
    if p.critical.kind != PAYLOAD_TYPE {
        return Some(format!("payload type `{}`", p.critical.kind));
    }
    // The signed digest, not the reference: a mirror or a re-tag keeps the digest.
    if p.critical.image.digest != digest.to_string() {
        return Some(format!("signed for {}, not for this image's {digest}", p.critical.image.digest));
    }
    None
}

/// Checks again, offline, the signature a bundle carries for an image (what the
/// bundler verified at create time): `Ok(Some(key name))` when it verifies, `Ok(None)`
/// when the image has none and none was required; an error naming the image otherwise.
pub fn check_carried(
    image: &str,
    digest: &Sha256Digest,
    check: &crate::manifest::CosignCheck,
) -> Result<Option<String>> {
    let what = format!("cosign signature of image {image}");
    let Some(s) = &check.signature else {
        if check.required {
            return Err(Error::signature(&what, "the bundle requires one but carries none").with_hint(
                "the bundle is inconsistent; ask the vendor for a bundle built with the image's signature",
            ));
        }
        return Ok(None);
    };
    let key = CosignKey::from_pem(&s.key_pem, &s.key)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (Ok(payload), Ok(sig)) = (b64.decode(&s.payload), b64.decode(&s.signature)) else {
        return Err(Error::signature(&what, "the carried payload or signature is not base64")
            .with_hint("the bundle is damaged or was altered; copy it again from the original medium"));
    };
    match payload_problem(&key, digest, &payload, &sig) {
        None => Ok(Some(s.key.clone())),
        Some(why) => Err(Error::signature(&what, why)
            .with_hint("the bundle is damaged or was altered; copy it again from the original medium")),
    }
}

/// Checks the signature manifest `manifest` (the `sha256-….sig` tag's) of the image
/// `image` (its reference, for messages) at `digest`: at least one simple signing
/// layer must verify with one of `keys`. `blob` returns a layer's bytes (at most a
/// few KiB; the caller limits and the digest is checked here). The error names the
/// image and says why nothing verified.
pub fn verify_signatures(
    image: &str,
    digest: &Sha256Digest,
    manifest: &[u8],
    keys: &[CosignKey],
    blob: &mut dyn FnMut(&Sha256Digest) -> Result<Vec<u8>>,
) -> Result<Verified> {
    let what = format!("cosign signature of image {image}");
    let m: SigManifest = serde_json::from_slice(manifest)
        .map_err(|e| Error::input(&what, format!("the signature manifest is not an OCI manifest: {e}")))?;
    let mut why = Vec::new();
    for layer in m.layers.iter().filter(|l| l.media_type == SIMPLE_SIGNING_MEDIA_TYPE) {
        let Some(sig_b64) = layer.annotations.get(SIGNATURE_ANNOTATION) else {
            why.push(format!("layer {} carries no signature", layer.digest));
            continue;
        };
        let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(sig_b64.trim()) else {
            why.push(format!("layer {}: the signature is not base64", layer.digest));
            continue;
        };
        let payload = blob(&layer.digest)?;
        if Sha256Digest::of(&payload) != layer.digest {
            why.push(format!("layer {}: the payload's bytes do not match its digest", layer.digest));
            continue;
        }
        let Some(key) = keys.iter().find(|k| k.verifies(&payload, &sig)) else {
            why.push(format!("layer {}: the signature does not verify with any given key", layer.digest));
            continue;
        };
        if let Some(problem) = payload_problem(key, digest, &payload, &sig) {
            why.push(format!("layer {}: {problem}", layer.digest));
            continue;
        }
        return Ok(Verified {
            key: key.name.clone(),
            key_fingerprint: key.fingerprint(),
            payload: layer.digest,
            payload_bytes: payload,
            signature: sig_b64.trim().to_string(),
        });
    }
    if why.is_empty() {
        why.push("the signature manifest has no simple signing layer".into());
    }
    let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
    Err(Error::signature(&what, format!("no valid signature by {}: {}", names.join(", "), why.join("; ")))
        .with_hint("sign the image with the vendor's key (cosign sign --key), or give the key it was signed with"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};

    struct Signer {
        pair: EcdsaKeyPair,
        key: CosignKey,
    }

    fn signer(name: &str) -> Signer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let mut der = P256_SPKI_PREFIX.to_vec();
        der.extend_from_slice(pair.public_key().as_ref());
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(der)
        );
        Signer { key: CosignKey::from_pem(&pem, name).unwrap(), pair }
    }

    fn payload(digest: &str) -> Vec<u8> {
        format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"example.com/app"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
        )
        .into_bytes()
    }

    fn sig_manifest(payload: &[u8], sig: &[u8]) -> Vec<u8> {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "layers": [{
                "mediaType": SIMPLE_SIGNING_MEDIA_TYPE,
                "digest": Sha256Digest::of(payload).to_string(),
                "size": payload.len(),
                "annotations": {SIGNATURE_ANNOTATION: base64::engine::general_purpose::STANDARD.encode(sig)},
            }],
        })
        .to_string()
        .into_bytes()
    }

    fn check(image: &Sha256Digest, manifest: &[u8], payload: &[u8], keys: &[CosignKey]) -> Result<Verified> {
        let payload = payload.to_vec();
        verify_signatures("example.com/app:1", image, manifest, keys, &mut |_| Ok(payload.clone()))
    }

    #[test]
    fn a_signature_by_the_given_key_over_this_digest_verifies() {
        let s = signer("vendor.pub");
        let image = Sha256Digest::of(b"image manifest");
        let p = payload(&image.to_string());
        let sig = s.pair.sign(&SystemRandom::new(), &p).unwrap();
        let v = check(&image, &sig_manifest(&p, sig.as_ref()), &p, std::slice::from_ref(&s.key)).unwrap();
        assert_eq!((v.key.as_str(), v.payload), ("vendor.pub", Sha256Digest::of(&p)));
        assert_eq!(signature_tag(&image), format!("sha256-{}.sig", image.hex()));
    }

    #[test]
    fn another_key_a_tampered_payload_and_another_digest_are_refused_naming_the_image() {
        let s = signer("vendor.pub");
        let other = signer("other.pub");
        let image = Sha256Digest::of(b"image manifest");
        let p = payload(&image.to_string());
        let sig = s.pair.sign(&SystemRandom::new(), &p).unwrap();
        let m = sig_manifest(&p, sig.as_ref());

        let e = check(&image, &m, &p, std::slice::from_ref(&other.key)).unwrap_err().to_string();
        assert!(e.contains("image example.com/app:1") && e.contains("does not verify"), "{e}");

        let mut tampered = p.clone();
        tampered[10] ^= 1;
        let e = check(&image, &m, &tampered, std::slice::from_ref(&s.key)).unwrap_err().to_string();
        assert!(e.contains("do not match its digest"), "{e}");

        // A good signature, but for another image.
        let e = check(&Sha256Digest::of(b"another"), &m, &p, std::slice::from_ref(&s.key)).unwrap_err().to_string();
        assert!(e.contains("not for this image's"), "{e}");

        let mut bad_sig = sig.as_ref().to_vec();
        let last = bad_sig.len() - 1;
        bad_sig[last] ^= 1;
        let e = check(&image, &sig_manifest(&p, &bad_sig), &p, std::slice::from_ref(&s.key)).unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
    }

    #[test]
    fn keys_that_are_not_p256_public_keys_are_refused() {
        for bad in ["", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "untrusted comment: minisign"] {
            let e = CosignKey::from_pem(bad, "k.pub").unwrap_err();
            assert!(e.hint.is_some() && e.to_string().contains("k.pub"), "{e}");
        }
    }
}
