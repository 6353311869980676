//! Minisign-compatible Ed25519 keys and signatures.
//!
//! Bundles are signed in the file formats of stock [minisign] 0.11, byte for byte, so
//! support staff and customers can check a bundle with nothing but `minisign -V`, and
//! vendors can sign with keys made by `minisign -G`. Compatibility with stock minisign
//! is a product requirement, not a convenience: do not "improve" these formats.
//!
//! The formats (all integers little-endian, base64 is standard with padding):
//! - public key, 42 bytes: `"Ed"` ‖ key_id\[8\] ‖ ed25519 pk\[32\], written as
//!   `untrusted comment: minisign public key <ID>` and one base64 line.
//! - secret key, 158 bytes: `"Ed"` ‖ kdf (`"Sc"` scrypt or `00 00` none) ‖ `"B2"` ‖
//!   salt\[32\] ‖ opslimit u64 ‖ memlimit u64 ‖ (key_id\[8\] ‖ seed\[32\] ‖ pk\[32\] ‖
//!   chk\[32\]) XOR scrypt stream\[104\]; chk = BLAKE2b-256(`"Ed"` ‖ key_id ‖ seed ‖ pk).
//!   The scrypt is libsodium's `crypto_pwhash_scryptsalsa208sha256`, whose opslimit and
//!   memlimit are turned into N, r and p by [`pick_scrypt_params`].
//! - signature, 4 lines: untrusted comment; base64(alg\[2\] ‖ key_id\[8\] ‖ sig\[64\]);
//!   `trusted comment: <tc>`; base64(global_sig\[64\]). alg `"ED"` (prehashed, the
//!   default since minisign 0.10) signs BLAKE2b-512(message); legacy `"Ed"`
//!   (`minisign -S -l`) signs the message itself. global_sig = Ed25519(sig ‖ tc), so
//!   the trusted comment cannot be changed without the key.
//!
//! [minisign]: https://jedisct1.github.io/minisign/

use std::fmt;
use std::io;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use blake2::digest::consts::U32;
use blake2::{Blake2b, Blake2b512, Digest};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

use crate::error::{Error, ErrorKind, Result};

/// libsodium's `crypto_pwhash_scryptsalsa208sha256_OPSLIMIT_SENSITIVE`, what `minisign -G` uses.
pub const DEFAULT_OPSLIMIT: u64 = 33_554_432;
/// libsodium's `crypto_pwhash_scryptsalsa208sha256_MEMLIMIT_SENSITIVE` (1 GiB).
pub const DEFAULT_MEMLIMIT: u64 = 1_073_741_824;

const SIGALG: [u8; 2] = *b"Ed";
const SIGALG_PREHASHED: [u8; 2] = *b"ED";
const KDF_SCRYPT: [u8; 2] = *b"Sc";
const KDF_NONE: [u8; 2] = [0, 0];
const CHK_BLAKE2B: [u8; 2] = *b"B2";

const UNTRUSTED_PREFIX: &str = "untrusted comment: ";
const TRUSTED_PREFIX: &str = "trusted comment: ";
const ENCRYPTED_SECRET_KEY_COMMENT: &str = "minisign encrypted secret key";
const UNENCRYPTED_SECRET_KEY_COMMENT: &str = "minisign unencrypted secret key";

/// minisign reads the untrusted comment line with `fgets(buf, 1024)`: with the prefix
/// and the newline, the comment itself may have at most 1003 bytes.
const MAX_UNTRUSTED_COMMENT: usize = 1024 - UNTRUSTED_PREFIX.len() - 2;
/// minisign refuses to sign a trusted comment of 8192 - 18 bytes or more.
const MAX_TRUSTED_COMMENT: usize = 8192 - TRUSTED_PREFIX.len() - 2;

const PUBLIC_KEY_BYTES: usize = 2 + 8 + 32;
const SECRET_KEY_BYTES: usize = 2 + 2 + 2 + 32 + 8 + 8 + KEYNUM_SK_BYTES;
const KEYNUM_SK_BYTES: usize = 8 + 64 + 32;
const SIGNATURE_BYTES: usize = 2 + 8 + 64;

/// Refuse scrypt parameters (from a key file) that need more than this much memory...
const MAX_SCRYPT_MEMORY: u64 = 4 << 30;
/// ...or more than this much work (in bytes mixed, 128·r·N·p): 16 times minisign's default.
const MAX_SCRYPT_WORK: u64 = 16 << 30;

const HINT_PUBKEY: &str = "pass the vendor's public key with --pubkey";

/// Writes zeros over a buffer that held secret material, in a way the optimiser keeps.
fn wipe(buf: &mut [u8]) {
    for b in buf.iter_mut() {
        // SAFETY: `b` is a valid, aligned, exclusive reference to a u8.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// Compares without stopping at the first difference.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn key_id_hex(key_id: [u8; 8]) -> String {
    format!("{:016X}", u64::from_le_bytes(key_id))
}

fn random_fill(buf: &mut [u8]) -> Result<()> {
    SystemRandom::new().fill(buf).map_err(|_| {
        Error::new(ErrorKind::Io, "system random number generator", "could not read random bytes")
            .with_hint("check that /dev/urandom (getrandom) is available")
    })
}

/// Reads a key file as text; errors name the path.
fn read_key_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes)
        .map_err(|_| Error::input(path.display().to_string(), "is not a minisign key file (it is not text)"))
}

/// Finds the base64 line of a key file: the line after the comment line, or the only
/// line when the text is a bare base64 key (as `minisign -P` takes it). Like stock
/// minisign, the comment line may say anything: a `.pub` whose first line was edited
/// (or written by another tool) is still read by `minisign -V -p`, so it is here too.
fn key_base64_line<'a>(text: &'a str, subject: &str, what: &str) -> Result<&'a str> {
    let mut lines = text.lines().map(str::trim).skip_while(|l| l.is_empty());
    let first = lines.next().ok_or_else(|| Error::input(subject, format!("is empty; expected a {what}")))?;
    match lines.next() {
        Some(l) if !l.is_empty() => Ok(l),
        _ if first.starts_with("untrusted comment:") => {
            Err(Error::input(subject, format!("has a comment line but no key line; expected a {what}")))
        }
        _ => Ok(first),
    }
}

fn decode_key_blob(text: &str, subject: &str, what: &str, len: usize) -> Result<Vec<u8>> {
    let line = key_base64_line(text, subject, what)?;
    let blob = B64
        .decode(line)
        .map_err(|_| Error::input(subject, format!("is not a {what}: the key line is not valid base64")))?;
    if blob.len() != len {
        let mut cause = format!("is not a {what}: the key is {} bytes, expected {len}", blob.len());
        if blob.len() == SIGNATURE_BYTES {
            cause.push_str(" (this looks like a signature file)");
        } else if blob.len() == PUBLIC_KEY_BYTES {
            cause.push_str(" (this looks like a public key)");
        } else if blob.len() == SECRET_KEY_BYTES {
            cause.push_str(" (this looks like a secret key)");
        }
        let mut blob = blob;
        wipe(&mut blob);
        return Err(Error::input(subject, cause));
    }
    Ok(blob)
}

fn check_comment(text: &str, what: &str, max: usize) -> Result<()> {
    if text.contains(['\n', '\r', '\0']) {
        return Err(Error::input(what, "must be a single line (no newline, carriage return or NUL)"));
    }
    if text.len() > max {
        return Err(Error::input(what, format!("is {} bytes long; minisign accepts at most {max}", text.len())));
    }
    Ok(())
}

/// libsodium's `pickparams` for `crypto_pwhash_scryptsalsa208sha256`, exactly: turns an
/// opslimit and a memlimit into scrypt's (log2 N, r, p). minisign's defaults give
/// (20, 8, 1): N = 2^20, 1 GiB of memory.
pub fn pick_scrypt_params(opslimit: u64, memlimit: u64) -> (u32, u32, u32) {
    let opslimit = opslimit.max(32_768);
    let r: u32 = 8;
    let first_n_log2_above = |max_n: u64| {
        let mut n_log2 = 1u32;
        while n_log2 < 63 {
            if (1u64 << n_log2) > max_n / 2 {
                break;
            }
            n_log2 += 1;
        }
        n_log2
    };
    if opslimit < memlimit / 32 {
        let max_n = opslimit / (u64::from(r) * 4);
        (first_n_log2_above(max_n), r, 1)
    } else {
        let max_n = memlimit / (u64::from(r) * 128);
        let n_log2 = first_n_log2_above(max_n);
        let max_rp = ((opslimit / 4) / (1u64 << n_log2)).min(0x3fff_ffff);
        (n_log2, r, (max_rp as u32) / r)
    }
}

/// The 104-byte scrypt stream that encrypts key_id ‖ sk ‖ chk.
fn scrypt_stream(
    passphrase: &str,
    salt: &[u8; 32],
    opslimit: u64,
    memlimit: u64,
    subject: &str,
) -> Result<[u8; KEYNUM_SK_BYTES]> {
    let (n_log2, r, p) = pick_scrypt_params(opslimit, memlimit);
    let describe = || format!("N=2^{n_log2}, r={r}, p={p} (opslimit {opslimit}, memlimit {memlimit})");
    let memory = 1u128 << n_log2.min(100);
    let memory = memory * 128 * u128::from(r);
    let work = memory * u128::from(p);
    if p == 0 || n_log2 >= 63 {
        return Err(Error::input(subject, format!("has unusable scrypt parameters: {}", describe())));
    }
    if memory > u128::from(MAX_SCRYPT_MEMORY) || work > u128::from(MAX_SCRYPT_WORK) {
        return Err(Error::input(
            subject,
            format!("asks for scrypt parameters far above minisign's defaults: {}; refusing", describe()),
        )
        .with_hint("re-encrypt the key with `minisign -C` (which uses the defaults)"));
    }
    let params = scrypt::Params::new(n_log2 as u8, r, p, 32)
        .map_err(|_| Error::input(subject, format!("has unusable scrypt parameters: {}", describe())))?;
    let mut out = [0u8; KEYNUM_SK_BYTES];
    scrypt::scrypt(passphrase.as_bytes(), salt, &params, &mut out)
        .map_err(|_| Error::input(subject, "scrypt key derivation failed"))?;
    Ok(out)
}

/// BLAKE2b-256("Ed" ‖ key_id ‖ seed ‖ pk): minisign's secret key checksum.
fn secret_key_checksum(key_id: &[u8; 8], seed: &[u8; 32], pk: &[u8; 32]) -> [u8; 32] {
    let mut h = Blake2b::<U32>::new();
    h.update(SIGALG);
    h.update(key_id);
    h.update(seed);
    h.update(pk);
    h.finalize().into()
}

// ---------------------------------------------------------------------------------
// Public keys

/// A minisign public key: an 8-byte key id and an Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey {
    key_id: [u8; 8],
    pk: [u8; 32],
}

impl PublicKey {
    /// Parses the text of a `.pub` file (`untrusted comment: …` line and base64 line),
    /// or just the base64 line, as `minisign -P` takes it.
    pub fn parse(text: &str) -> Result<Self> {
        Self::parse_as(text, "minisign public key")
    }

    /// Reads and parses a `.pub` file; errors name the path.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = read_key_file(path)?;
        Self::parse_as(&text, &path.display().to_string())
    }

    fn parse_as(text: &str, subject: &str) -> Result<Self> {
        let blob = decode_key_blob(text, subject, "minisign public key", PUBLIC_KEY_BYTES)?;
        if blob[..2] != SIGALG {
            return Err(Error::input(
                subject,
                format!(
                    "uses an unsupported signature algorithm {:?} (expected \"Ed\")",
                    String::from_utf8_lossy(&blob[..2])
                ),
            ));
        }
        let mut key_id = [0u8; 8];
        let mut pk = [0u8; 32];
        key_id.copy_from_slice(&blob[2..10]);
        pk.copy_from_slice(&blob[10..42]);
        Ok(Self { key_id, pk })
    }

    /// The 42-byte key blob, base64-encoded: what `minisign -P` takes.
    pub fn to_base64(&self) -> String {
        let mut blob = Vec::with_capacity(PUBLIC_KEY_BYTES);
        blob.extend_from_slice(&SIGALG);
        blob.extend_from_slice(&self.key_id);
        blob.extend_from_slice(&self.pk);
        B64.encode(blob)
    }

    /// The `.pub` file exactly as `minisign -G` writes it. (minisign prints the key id
    /// here with `%` PRIX64, so without leading zeros.)
    pub fn to_text(&self) -> String {
        format!("{UNTRUSTED_PREFIX}minisign public key {:X}\n{}\n", u64::from_le_bytes(self.key_id), self.to_base64())
    }

    pub fn key_id(&self) -> [u8; 8] {
        self.key_id
    }

    /// The key id as 16 upper-case hex digits: the 8 bytes read as a little-endian u64.
    pub fn key_id_hex(&self) -> String {
        key_id_hex(self.key_id)
    }

    /// The raw Ed25519 public key.
    pub fn ed25519_bytes(&self) -> [u8; 32] {
        self.pk
    }

    fn verify_raw(&self, message: &[u8], sig: &[u8; 64]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.pk).verify(message, sig).is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id_hex())
    }
}

// ---------------------------------------------------------------------------------
// Secret keys

/// A minisign secret key. Its seed is overwritten when it is dropped, and neither
/// `Debug` nor any error shows it.
pub struct SecretKey {
    key_id: [u8; 8],
    seed: [u8; 32],
    pk: [u8; 32],
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        wipe(&mut self.seed);
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({}, ..)", self.key_id_hex())
    }
}

impl SecretKey {
    /// A new key pair: a random Ed25519 seed and a random key id, like `minisign -G`.
    pub fn generate() -> Result<Self> {
        let mut seed = [0u8; 32];
        let mut key_id = [0u8; 8];
        random_fill(&mut seed)?;
        random_fill(&mut key_id)?;
        let kp = Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|_| Error::new(ErrorKind::Io, "minisign key generation", "could not derive an Ed25519 key pair"));
        let kp = match kp {
            Ok(kp) => kp,
            Err(e) => {
                wipe(&mut seed);
                return Err(e);
            }
        };
        let mut pk = [0u8; 32];
        pk.copy_from_slice(kp.public_key().as_ref());
        let key = Self { key_id, seed, pk };
        wipe(&mut seed);
        Ok(key)
    }

    /// Parses the text of a minisign secret key file. Unencrypted keys (kdf `00 00`,
    /// as `minisign -G -W` writes them, checksum zero or not) need no passphrase;
    /// scrypt-encrypted keys need `passphrase`, and a wrong one is reported as such.
    pub fn parse(text: &str, passphrase: Option<&str>) -> Result<Self> {
        Self::parse_as(text, passphrase, "minisign secret key")
    }

    /// Reads and parses a secret key file; errors name the path.
    pub fn from_file(path: &Path, passphrase: Option<&str>) -> Result<Self> {
        let text = read_key_file(path)?;
        Self::parse_as(&text, passphrase, &path.display().to_string())
    }

    /// Whether a secret key file's text is passphrase-protected, so a caller knows
    /// whether to ask for a passphrase before [`SecretKey::parse`].
    pub fn is_encrypted_text(text: &str) -> Result<bool> {
        let subject = "minisign secret key";
        let mut blob = decode_key_blob(text, subject, subject, SECRET_KEY_BYTES)?;
        let kdf = [blob[2], blob[3]];
        wipe(&mut blob);
        match kdf {
            KDF_SCRYPT => Ok(true),
            KDF_NONE => Ok(false),
            other => Err(unsupported_kdf(subject, other)),
        }
    }

    fn parse_as(text: &str, passphrase: Option<&str>, subject: &str) -> Result<Self> {
        let mut blob = decode_key_blob(text, subject, "minisign secret key", SECRET_KEY_BYTES)?;
        let result = Self::from_blob(&mut blob, passphrase, subject);
        wipe(&mut blob);
        result
    }

    fn from_blob(blob: &mut [u8], passphrase: Option<&str>, subject: &str) -> Result<Self> {
        if blob[0..2] != SIGALG {
            return Err(Error::input(
                subject,
                format!(
                    "uses an unsupported signature algorithm {:?} (expected \"Ed\")",
                    String::from_utf8_lossy(&blob[0..2])
                ),
            ));
        }
        if blob[4..6] != CHK_BLAKE2B {
            return Err(Error::input(
                subject,
                format!(
                    "uses an unsupported checksum algorithm {:?} (expected \"B2\")",
                    String::from_utf8_lossy(&blob[4..6])
                ),
            ));
        }
        let kdf = [blob[2], blob[3]];
        let encrypted = match kdf {
            KDF_SCRYPT => true,
            KDF_NONE => false,
            other => return Err(unsupported_kdf(subject, other)),
        };
        let (head, keynum_sk) = blob.split_at_mut(SECRET_KEY_BYTES - KEYNUM_SK_BYTES);
        if encrypted {
            let Some(passphrase) = passphrase else {
                return Err(Error::input(subject, "is encrypted with a passphrase, and none was given")
                    .with_hint("give the passphrase of this key"));
            };
            let mut salt = [0u8; 32];
            salt.copy_from_slice(&head[6..38]);
            let opslimit = u64::from_le_bytes(head[38..46].try_into().expect("8 bytes"));
            let memlimit = u64::from_le_bytes(head[46..54].try_into().expect("8 bytes"));
            let mut stream = scrypt_stream(passphrase, &salt, opslimit, memlimit, subject)?;
            for (b, s) in keynum_sk.iter_mut().zip(stream.iter()) {
                *b ^= *s;
            }
            wipe(&mut stream);
        }
        let mut key = Self { key_id: [0; 8], seed: [0; 32], pk: [0; 32] };
        key.key_id.copy_from_slice(&keynum_sk[0..8]);
        key.seed.copy_from_slice(&keynum_sk[8..40]);
        key.pk.copy_from_slice(&keynum_sk[40..72]);
        let stored_chk = &keynum_sk[72..104];
        let mut chk = secret_key_checksum(&key.key_id, &key.seed, &key.pk);
        let chk_ok = same_bytes(&chk, stored_chk);
        wipe(&mut chk);
        if encrypted && !chk_ok {
            return Err(Error::input(
                subject,
                "wrong passphrase for this secret key (its checksum does not match after decryption)",
            )
            .with_hint("check the passphrase; it is the one given when the key was made"));
        }
        // `minisign -G -W` writes an all-zero checksum and never checks it for
        // unencrypted keys; a non-zero one (ours) must match.
        if !encrypted && !chk_ok && stored_chk.iter().any(|&b| b != 0) {
            return Err(Error::input(subject, "is damaged: the secret key checksum does not match"));
        }
        if Ed25519KeyPair::from_seed_and_public_key(&key.seed, &key.pk).is_err() {
            return Err(Error::input(subject, "is damaged: its public half does not belong to its private half"));
        }
        Ok(key)
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey { key_id: self.key_id, pk: self.pk }
    }

    pub fn key_id(&self) -> [u8; 8] {
        self.key_id
    }

    pub fn key_id_hex(&self) -> String {
        key_id_hex(self.key_id)
    }

    /// The secret key file. `None`: unencrypted, in the layout `minisign -G -W` writes
    /// (kdf `00 00`, salt and limits zero; we do fill in the checksum, which minisign
    /// ignores for unencrypted keys and which lets us detect damage). `Some`: encrypted
    /// with scrypt at minisign's defaults (about 1 GiB of memory and a few seconds).
    pub fn to_text(&self, passphrase: Option<&str>) -> Result<String> {
        match passphrase {
            None => Ok(self.encode(None)),
            Some(p) => self.to_text_with_kdf_limits(p, DEFAULT_OPSLIMIT, DEFAULT_MEMLIMIT),
        }
    }

    /// The secret key file encrypted with scrypt at the given libsodium limits (cheap
    /// ones make tests fast; stock minisign reads any limits from the file).
    pub fn to_text_with_kdf_limits(&self, passphrase: &str, opslimit: u64, memlimit: u64) -> Result<String> {
        let mut salt = [0u8; 32];
        random_fill(&mut salt)?;
        let stream = scrypt_stream(passphrase, &salt, opslimit, memlimit, "minisign secret key")?;
        Ok(self.encode(Some((salt, opslimit, memlimit, stream))))
    }

    fn encode(&self, kdf: Option<([u8; 32], u64, u64, [u8; KEYNUM_SK_BYTES])>) -> String {
        let mut blob = Vec::with_capacity(SECRET_KEY_BYTES);
        blob.extend_from_slice(&SIGALG);
        blob.extend_from_slice(if kdf.is_some() { &KDF_SCRYPT } else { &KDF_NONE });
        blob.extend_from_slice(&CHK_BLAKE2B);
        match &kdf {
            Some((salt, ops, mem, _)) => {
                blob.extend_from_slice(salt);
                blob.extend_from_slice(&ops.to_le_bytes());
                blob.extend_from_slice(&mem.to_le_bytes());
            }
            None => blob.extend_from_slice(&[0u8; 48]),
        }
        let start = blob.len();
        blob.extend_from_slice(&self.key_id);
        blob.extend_from_slice(&self.seed);
        blob.extend_from_slice(&self.pk);
        blob.extend_from_slice(&secret_key_checksum(&self.key_id, &self.seed, &self.pk));
        let comment = match kdf {
            Some((_, _, _, mut stream)) => {
                for (b, s) in blob[start..].iter_mut().zip(stream.iter()) {
                    *b ^= *s;
                }
                wipe(&mut stream);
                ENCRYPTED_SECRET_KEY_COMMENT
            }
            None => UNENCRYPTED_SECRET_KEY_COMMENT,
        };
        debug_assert_eq!(blob.len(), SECRET_KEY_BYTES);
        let text = format!("{UNTRUSTED_PREFIX}{comment}\n{}\n", B64.encode(&blob));
        wipe(&mut blob);
        text
    }

    fn key_pair(&self) -> Result<Ed25519KeyPair> {
        Ed25519KeyPair::from_seed_and_public_key(&self.seed, &self.pk).map_err(|_| {
            Error::input("minisign secret key", "is damaged: its public half does not belong to its private half")
        })
    }

    /// Signs `message` the way `minisign -S` (0.11) does: prehashed with BLAKE2b-512.
    pub fn sign(&self, message: &[u8], trusted_comment: &str, untrusted_comment: &str) -> Result<Signature> {
        let mut prehash = Prehash::new();
        prehash.update(message);
        self.sign_prehashed(prehash, trusted_comment, untrusted_comment)
    }

    /// Signs content that was fed through `prehash` (for inputs too big to hold).
    pub fn sign_prehashed(
        &self,
        prehash: Prehash,
        trusted_comment: &str,
        untrusted_comment: &str,
    ) -> Result<Signature> {
        let digest = prehash.finish();
        self.sign_data(true, &digest, trusted_comment, untrusted_comment)
    }

    /// `prehashed` false makes a legacy signature, as `minisign -S -l` does; only the
    /// tests need that.
    fn sign_data(
        &self,
        prehashed: bool,
        data: &[u8],
        trusted_comment: &str,
        untrusted_comment: &str,
    ) -> Result<Signature> {
        check_comment(trusted_comment, "trusted comment", MAX_TRUSTED_COMMENT)?;
        check_comment(untrusted_comment, "untrusted comment", MAX_UNTRUSTED_COMMENT)?;
        let kp = self.key_pair()?;
        let mut sig = [0u8; 64];
        sig.copy_from_slice(kp.sign(data).as_ref());
        let mut global_sig = [0u8; 64];
        global_sig.copy_from_slice(kp.sign(&global_message(&sig, trusted_comment)).as_ref());
        Ok(Signature {
            prehashed,
            key_id: self.key_id,
            sig,
            trusted_comment: trusted_comment.to_string(),
            global_sig,
            untrusted_comment: untrusted_comment.to_string(),
        })
    }
}

fn unsupported_kdf(subject: &str, kdf: [u8; 2]) -> Error {
    Error::input(
        subject,
        format!("uses an unsupported key derivation algorithm {:02x}{:02x} (expected \"Sc\" or none)", kdf[0], kdf[1]),
    )
}

/// What the global signature signs: sig ‖ trusted comment (no prefix, no newline).
fn global_message(sig: &[u8; 64], trusted_comment: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(64 + trusted_comment.len());
    m.extend_from_slice(sig);
    m.extend_from_slice(trusted_comment.as_bytes());
    m
}

// ---------------------------------------------------------------------------------
// Prehash

/// BLAKE2b-512 of the signed content, fed incrementally. Also an `io::Write`, so
/// `io::copy(&mut file, &mut prehash)` works.
#[derive(Clone)]
pub struct Prehash(Blake2b512);

impl Prehash {
    pub fn new() -> Self {
        Self(Blake2b512::new())
    }
    pub fn update(&mut self, bytes: &[u8]) {
        Digest::update(&mut self.0, bytes);
    }
    fn finish(self) -> [u8; 64] {
        self.0.finalize().into()
    }
}

impl Default for Prehash {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Prehash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Prehash(BLAKE2b-512)")
    }
}

impl io::Write for Prehash {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// Signatures

/// A `.minisig` signature.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature {
    /// `"ED"` (BLAKE2b-512 prehash) when true, legacy `"Ed"` when false.
    prehashed: bool,
    key_id: [u8; 8],
    sig: [u8; 64],
    trusted_comment: String,
    global_sig: [u8; 64],
    untrusted_comment: String,
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signature")
            .field("algorithm", &if self.prehashed { "ED" } else { "Ed" })
            .field("key_id", &self.key_id_hex())
            .field("trusted_comment", &self.trusted_comment)
            .finish_non_exhaustive()
    }
}

fn malformed_sig(cause: impl Into<String>) -> Error {
    Error::signature("minisign signature", format!("is malformed: {}", cause.into()))
        .with_hint("the signature file is damaged or is not a minisign signature; get it again from the vendor")
}

impl Signature {
    /// Parses the 4-line `.minisig` format (CRLF line ends are tolerated, as minisign does).
    pub fn parse(text: &str) -> Result<Self> {
        let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let mut next =
            |what: &str| lines.next().ok_or_else(|| malformed_sig(format!("it ends before the {what} line")));
        let untrusted = next("untrusted comment")?;
        let sig_line = next("signature")?;
        let trusted = next("trusted comment")?;
        let global_line = next("global signature")?;
        if lines.any(|l| !l.trim().is_empty()) {
            return Err(malformed_sig("it has more than 4 lines"));
        }
        let untrusted_comment = untrusted
            .strip_prefix(UNTRUSTED_PREFIX)
            .ok_or_else(|| malformed_sig(format!("line 1 does not start with {UNTRUSTED_PREFIX:?}")))?;
        let trusted_comment = trusted
            .strip_prefix(TRUSTED_PREFIX)
            .ok_or_else(|| malformed_sig(format!("line 3 does not start with {TRUSTED_PREFIX:?}")))?;
        let blob = B64.decode(sig_line.trim()).map_err(|_| malformed_sig("line 2 is not valid base64"))?;
        if blob.len() != SIGNATURE_BYTES {
            return Err(malformed_sig(format!("line 2 holds {} bytes, expected {SIGNATURE_BYTES}", blob.len())));
        }
        let prehashed = match [blob[0], blob[1]] {
            SIGALG_PREHASHED => true,
            SIGALG => false,
            other => {
                return Err(malformed_sig(format!(
                    "unknown signature algorithm {:02x}{:02x} (expected \"ED\" or \"Ed\")",
                    other[0], other[1]
                )))
            }
        };
        let global = B64.decode(global_line.trim()).map_err(|_| malformed_sig("line 4 is not valid base64"))?;
        let global_sig: [u8; 64] = global
            .as_slice()
            .try_into()
            .map_err(|_| malformed_sig(format!("line 4 holds {} bytes, expected 64", global.len())))?;
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&blob[2..10]);
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&blob[10..74]);
        Ok(Self {
            prehashed,
            key_id,
            sig,
            trusted_comment: trusted_comment.to_string(),
            global_sig,
            untrusted_comment: untrusted_comment.to_string(),
        })
    }

    /// The `.minisig` file, byte for byte as minisign writes it.
    pub fn to_text(&self) -> String {
        let mut blob = Vec::with_capacity(SIGNATURE_BYTES);
        blob.extend_from_slice(if self.prehashed { &SIGALG_PREHASHED } else { &SIGALG });
        blob.extend_from_slice(&self.key_id);
        blob.extend_from_slice(&self.sig);
        format!(
            "{UNTRUSTED_PREFIX}{}\n{}\n{TRUSTED_PREFIX}{}\n{}\n",
            self.untrusted_comment,
            B64.encode(blob),
            self.trusted_comment,
            B64.encode(self.global_sig)
        )
    }

    pub fn key_id(&self) -> [u8; 8] {
        self.key_id
    }

    pub fn key_id_hex(&self) -> String {
        key_id_hex(self.key_id)
    }

    /// The signed comment. Only trust it after [`verify`] succeeded.
    pub fn trusted_comment(&self) -> &str {
        &self.trusted_comment
    }

    /// The unsigned comment; anyone can change it.
    pub fn untrusted_comment(&self) -> &str {
        &self.untrusted_comment
    }

    /// True for `"ED"` (BLAKE2b-512 prehash, minisign's default), false for legacy `"Ed"`.
    pub fn is_prehashed(&self) -> bool {
        self.prehashed
    }
}

/// The first trusted key with the signature's key id, or an error naming both sides.
fn find_key<'a>(trusted: &'a [PublicKey], sig: &Signature) -> Result<&'a PublicKey> {
    trusted.iter().find(|k| k.key_id == sig.key_id).ok_or_else(|| {
        let list = if trusted.is_empty() {
            "none".to_string()
        } else {
            trusted.iter().map(PublicKey::key_id_hex).collect::<Vec<_>>().join(", ")
        };
        Error::signature(
            "minisign signature",
            format!("is not from a trusted key: signed by key {}, trusted keys: {list}", sig.key_id_hex()),
        )
        .with_hint(HINT_PUBKEY)
    })
}

fn check_with_key(key: &PublicKey, sig: &Signature, data: &[u8]) -> Result<PublicKey> {
    if !key.verify_raw(data, &sig.sig) {
        let kind = if sig.prehashed { "signature" } else { "legacy (non-prehashed) signature" };
        return Err(Error::signature(
            "minisign signature",
            format!(
                "{kind} by key {} does not match the content: the content was changed or damaged after signing",
                sig.key_id_hex()
            ),
        )
        .with_hint("get the file and its signature again from the vendor"));
    }
    if !key.verify_raw(&global_message(&sig.sig, &sig.trusted_comment), &sig.global_sig) {
        return Err(Error::signature(
            "minisign signature",
            format!(
                "the trusted comment was altered after signing (the global signature by key {} does not match it)",
                sig.key_id_hex()
            ),
        )
        .with_hint("get the signature file again from the vendor"));
    }
    Ok(*key)
}

/// Verifies `sig` over `message` with the first key in `trusted` whose key id matches.
/// Checks the signature AND the global signature over the trusted comment. Legacy
/// (non-prehashed, `minisign -S -l`) signatures are accepted when they are correct.
pub fn verify(trusted: &[PublicKey], sig: &Signature, message: &[u8]) -> Result<PublicKey> {
    let key = find_key(trusted, sig)?;
    if sig.prehashed {
        let mut prehash = Prehash::new();
        prehash.update(message);
        check_with_key(key, sig, &prehash.finish())
    } else {
        check_with_key(key, sig, message)
    }
}

/// [`verify`] for content that was fed through `prehash`. A legacy signature signs the
/// content itself, so it cannot be checked this way and is refused.
pub fn verify_prehashed(trusted: &[PublicKey], sig: &Signature, prehash: Prehash) -> Result<PublicKey> {
    let key = find_key(trusted, sig)?;
    if !sig.prehashed {
        return Err(Error::signature(
            "minisign signature",
            "is a legacy (non-prehashed, `minisign -S -l`) signature, which cannot be checked while streaming",
        )
        .with_hint("sign with minisign 0.10 or later without -l (prehashed signatures are the default)"));
    }
    check_with_key(key, sig, &prehash.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap scrypt limits: N = 2^10, r = 8, p = 1 (1 MiB).
    const CHEAP_OPS: u64 = 32_768;
    const CHEAP_MEM: u64 = 16 << 20;

    fn key() -> SecretKey {
        SecretKey::generate().unwrap()
    }

    // Made by stock minisign 0.11: `minisign -G -W`, then over "hello airlock\n"
    // `minisign -S -t 'airlock test vector'` and `minisign -S -l -t 'airlock legacy vector'`.
    const STOCK_MESSAGE: &[u8] = b"hello airlock\n";
    const STOCK_PUB: &str = "untrusted comment: minisign public key 254FABA1A97C610E
RWQOYXypoatPJTGsYczUtHICn8ha+W021xqvrhcOAKNC+B4iv4zr6NrT
";
    const STOCK_SEC: &str = "untrusted comment: minisign encrypted secret key
RWQAAEIyAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAADmF8qaGrTyU/vIrrHWpi8GEsKbkt4Qj0bqNRabwT9Fli5uUdyhheJjGsYczUtHICn8ha+W021xqvrhcOAKNC+B4iv4zr6NrTAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
";
    const STOCK_SIG: &str = "untrusted comment: signature from minisign secret key
RUQOYXypoatPJQ1NLwBKKJy843I76ulXL9dENSKrMZUefiwL1Ulba6Aq/MOWDAhm9piuhHs9E6nSFGDKCV8yq/hdlWiFSHL03QM=
trusted comment: airlock test vector
4QT+WUKEGM61wYyzJ2WNfkQeDr2c2Qb7GKkM0c38Phmgzv5xrRDZNZEEo2QtMC6QkYk7gK6ORHg7bgjLUgURBg==
";
    const STOCK_LEGACY_SIG: &str = "untrusted comment: signature from minisign secret key
RWQOYXypoatPJX2TPkT/dQcAPfEt8xwXdNQEsHzkE8ZMItErTVpHrO3Uyvr5iTJowhd1mo2TTBy2ef56+Tt1EambG5NtK8bufwM=
trusted comment: airlock legacy vector
BzpmMGhqOrFSdSCw33YgRPgbVIGEBnpbVaP5oP35utgnprTWsojYmwjdhi0kERzGNhchqvVMEDVq4Xxhy5IzBg==
";

    #[test]
    fn stock_minisign_vectors_parse_verify_and_reproduce_byte_for_byte() {
        let pk = PublicKey::parse(STOCK_PUB).unwrap();
        assert_eq!(pk.key_id_hex(), "254FABA1A97C610E");
        assert_eq!(pk.to_text(), STOCK_PUB);
        assert!(!SecretKey::is_encrypted_text(STOCK_SEC).unwrap());
        let sk = SecretKey::parse(STOCK_SEC, None).unwrap();
        assert_eq!(sk.public_key(), pk);
        let sig = Signature::parse(STOCK_SIG).unwrap();
        assert!(sig.is_prehashed());
        assert_eq!(sig.to_text(), STOCK_SIG);
        assert_eq!(verify(&[pk], &sig, STOCK_MESSAGE).unwrap(), pk);
        let legacy = Signature::parse(STOCK_LEGACY_SIG).unwrap();
        assert!(!legacy.is_prehashed());
        assert_eq!(legacy.to_text(), STOCK_LEGACY_SIG);
        assert_eq!(legacy.trusted_comment(), "airlock legacy vector");
        verify(&[pk], &legacy, STOCK_MESSAGE).unwrap();
        // Ed25519 is deterministic, so our signatures with the stock key are identical
        let ours = sk.sign(STOCK_MESSAGE, "airlock test vector", "signature from minisign secret key").unwrap();
        assert_eq!(ours.to_text(), STOCK_SIG);
        let ours =
            sk.sign_data(false, STOCK_MESSAGE, "airlock legacy vector", "signature from minisign secret key").unwrap();
        assert_eq!(ours.to_text(), STOCK_LEGACY_SIG);
    }

    #[test]
    fn signature_round_trips_and_verifies() {
        let sk = key();
        let pk = sk.public_key();
        let sig =
            sk.sign(b"bundle manifest", "timestamp:1\tfile:manifest.json\thashed", "signature from airlock").unwrap();
        assert!(sig.is_prehashed());
        assert_eq!(sig.key_id(), pk.key_id());
        let parsed = Signature::parse(&sig.to_text()).unwrap();
        assert_eq!(parsed, sig);
        assert_eq!(parsed.to_text(), sig.to_text());
        assert_eq!(parsed.trusted_comment(), "timestamp:1\tfile:manifest.json\thashed");
        assert_eq!(verify(&[pk], &parsed, b"bundle manifest").unwrap(), pk);
    }

    #[test]
    fn streaming_prehash_equals_one_shot() {
        let sk = key();
        let pk = sk.public_key();
        let mut p = Prehash::new();
        p.update(b"bundle ");
        io::Write::write_all(&mut p, b"manifest").unwrap();
        let sig = sk.sign_prehashed(p, "tc", "uc").unwrap();
        verify(&[pk], &sig, b"bundle manifest").unwrap();
        let mut p = Prehash::default();
        p.update(b"bundle manifest");
        verify_prehashed(&[pk], &sig, p).unwrap();
    }

    #[test]
    fn signing_is_deterministic_rfc8032() {
        let sk = key();
        let a = sk.sign(b"m", "tc", "uc").unwrap();
        let b = sk.sign(b"m", "tc", "uc").unwrap();
        assert_eq!(a.to_text(), b.to_text());
    }

    #[test]
    fn tampered_message_is_rejected() {
        let sk = key();
        let sig = sk.sign(b"bundle manifest", "tc", "uc").unwrap();
        let err = verify(&[sk.public_key()], &sig, b"bundle manifesT").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Signature);
        assert!(err.to_string().contains("does not match the content"), "{err}");
    }

    #[test]
    fn tampered_trusted_comment_is_rejected() {
        let sk = key();
        let sig = sk.sign(b"m", "timestamp:1\tfile:a", "uc").unwrap();
        let text = sig.to_text().replace("file:a", "file:b");
        let forged = Signature::parse(&text).unwrap();
        let err = verify(&[sk.public_key()], &forged, b"m").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Signature);
        assert!(err.to_string().contains("trusted comment was altered"), "{err}");
    }

    #[test]
    fn changed_untrusted_comment_is_fine() {
        let sk = key();
        let sig = sk.sign(b"m", "tc", "one").unwrap();
        let text = sig.to_text().replace("untrusted comment: one", "untrusted comment: two");
        verify(&[sk.public_key()], &Signature::parse(&text).unwrap(), b"m").unwrap();
    }

    #[test]
    fn signature_from_an_untrusted_key_names_both_key_ids() {
        let signer = key();
        let other = key();
        let sig = signer.sign(b"m", "tc", "uc").unwrap();
        let err = verify(&[other.public_key()], &sig, b"m").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Signature);
        let text = err.to_string();
        assert!(text.contains(&format!("signed by key {}", signer.key_id_hex())), "{text}");
        assert!(text.contains(&format!("trusted keys: {}", other.key_id_hex())), "{text}");
        assert!(text.contains("--pubkey"), "{text}");
        // the matching key is found among several
        assert_eq!(verify(&[other.public_key(), signer.public_key()], &sig, b"m").unwrap(), signer.public_key());
        let err = verify(&[], &sig, b"m").unwrap_err();
        assert!(err.to_string().contains("trusted keys: none"), "{err}");
    }

    #[test]
    fn key_with_a_forged_key_id_fails_on_content_not_on_id() {
        let signer = key();
        let impostor = key();
        let sig = signer.sign(b"m", "tc", "uc").unwrap();
        let fake = PublicKey { key_id: signer.key_id(), pk: impostor.public_key().pk };
        let err = verify(&[fake], &sig, b"m").unwrap_err();
        assert!(err.to_string().contains("does not match the content"), "{err}");
    }

    #[test]
    fn legacy_signatures_verify_when_correct_and_are_named_when_not() {
        let sk = key();
        let sig = sk.sign_data(false, b"legacy message", "tc", "uc").unwrap();
        let sig = Signature::parse(&sig.to_text()).unwrap();
        assert!(!sig.is_prehashed());
        verify(&[sk.public_key()], &sig, b"legacy message").unwrap();
        let err = verify(&[sk.public_key()], &sig, b"legacy messagf").unwrap_err();
        assert!(err.to_string().contains("legacy (non-prehashed) signature"), "{err}");
        let mut p = Prehash::new();
        p.update(b"legacy message");
        let err = verify_prehashed(&[sk.public_key()], &sig, p).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Signature);
        assert!(err.to_string().contains("legacy"), "{err}");
    }

    #[test]
    fn public_key_text_round_trips_and_bare_base64_is_accepted() {
        let pk = key().public_key();
        let text = pk.to_text();
        assert!(text.starts_with("untrusted comment: minisign public key "));
        assert!(text.ends_with('\n'));
        assert_eq!(text.lines().count(), 2);
        assert_eq!(PublicKey::parse(&text).unwrap(), pk);
        assert_eq!(PublicKey::parse(&pk.to_base64()).unwrap(), pk);
        assert_eq!(PublicKey::parse(&format!("  {}  \n", pk.to_base64())).unwrap(), pk);
        assert_eq!(PublicKey::parse(&text.replace('\n', "\r\n")).unwrap(), pk);
    }

    /// Found by the differential fuzz target (`minisign_diff`): stock minisign 0.11 and
    /// the `minisign` crate read a `.pub` whatever its comment line says; we refused
    /// one whose first line was not `untrusted comment:`. Any comment line is a comment.
    #[test]
    fn a_key_file_comment_line_may_say_anything_as_in_minisign() {
        let pk = PublicKey::parse(STOCK_PUB).unwrap();
        let b64 = STOCK_PUB.lines().nth(1).unwrap();
        for comment in ["untrustmd comment: minisign public key 254FABA1A97C610E", "garbage line", "#", "RWQ"] {
            assert_eq!(PublicKey::parse(&format!("{comment}\n{b64}\n")).unwrap(), pk, "{comment:?}");
        }
        let sk_b64 = STOCK_SEC.lines().nth(1).unwrap();
        assert_eq!(SecretKey::parse(&format!("my key\n{sk_b64}\n"), None).unwrap().public_key(), pk);
        // A comment line alone is still no key, and a bare key line still is one.
        assert!(PublicKey::parse("untrusted comment: x\n").is_err());
        assert_eq!(PublicKey::parse(b64).unwrap(), pk);
    }

    #[test]
    fn key_ids_print_like_minisign() {
        let pk = PublicKey { key_id: [0x45, 0x8b, 0xc8, 0x54, 0x93, 0xc8, 0x34, 0x12], pk: [7; 32] };
        assert_eq!(pk.key_id_hex(), "1234C89354C88B45");
        assert!(pk.to_text().starts_with("untrusted comment: minisign public key 1234C89354C88B45\n"));
        // minisign writes the .pub comment with %PRIX64, without leading zeros
        let pk = PublicKey { key_id: [0xab, 0xd4, 0x32, 0xfb, 0x27, 0x64, 0xe7, 0x0d], pk: [7; 32] };
        assert_eq!(pk.key_id_hex(), "0DE76427FB32D4AB");
        assert!(pk.to_text().starts_with("untrusted comment: minisign public key DE76427FB32D4AB\n"));
    }

    #[test]
    fn unencrypted_secret_key_round_trips() {
        let sk = key();
        let text = sk.to_text(None).unwrap();
        assert!(text.starts_with("untrusted comment: minisign unencrypted secret key\n"));
        assert!(!SecretKey::is_encrypted_text(&text).unwrap());
        let back = SecretKey::parse(&text, None).unwrap();
        assert_eq!(back.public_key(), sk.public_key());
        // a passphrase given for an unencrypted key is ignored, as minisign does
        let back = SecretKey::parse(&text, Some("ignored")).unwrap();
        assert_eq!(back.public_key(), sk.public_key());
        let sig = back.sign(b"m", "tc", "uc").unwrap();
        verify(&[sk.public_key()], &sig, b"m").unwrap();
    }

    #[test]
    fn unencrypted_key_with_zero_checksum_is_accepted_like_minisign_w() {
        let sk = key();
        let mut blob = B64.decode(sk.to_text(None).unwrap().lines().nth(1).unwrap()).unwrap();
        blob[126..158].fill(0);
        let text = format!("untrusted comment: minisign encrypted secret key\n{}\n", B64.encode(&blob));
        assert_eq!(SecretKey::parse(&text, None).unwrap().public_key(), sk.public_key());
        // a non-zero checksum that does not match is damage
        blob[130] = 1;
        let text = format!("untrusted comment: x\n{}\n", B64.encode(&blob));
        let err = SecretKey::parse(&text, None).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Input);
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    #[test]
    fn encrypted_secret_key_round_trips_with_cheap_limits() {
        let sk = key();
        let text = sk.to_text_with_kdf_limits("correct horse", CHEAP_OPS, CHEAP_MEM).unwrap();
        assert!(text.starts_with("untrusted comment: minisign encrypted secret key\n"));
        assert!(SecretKey::is_encrypted_text(&text).unwrap());
        let blob = B64.decode(text.lines().nth(1).unwrap()).unwrap();
        assert_eq!(&blob[..6], b"EdScB2");
        assert_eq!(u64::from_le_bytes(blob[38..46].try_into().unwrap()), CHEAP_OPS);
        assert_eq!(u64::from_le_bytes(blob[46..54].try_into().unwrap()), CHEAP_MEM);
        // the key id is not visible in the clear
        assert_ne!(&blob[54..62], &sk.key_id());
        let back = SecretKey::parse(&text, Some("correct horse")).unwrap();
        assert_eq!(back.public_key(), sk.public_key());
        let sig = back.sign(b"m", "tc", "uc").unwrap();
        verify(&[sk.public_key()], &sig, b"m").unwrap();
    }

    #[test]
    fn wrong_or_missing_passphrase_is_a_clear_error_without_secrets() {
        let sk = key();
        let text = sk.to_text_with_kdf_limits("correct horse", CHEAP_OPS, CHEAP_MEM).unwrap();
        let err = SecretKey::parse(&text, Some("battery staple")).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Input);
        let msg = format!("{err} {err:?}");
        assert!(msg.contains("wrong passphrase"), "{msg}");
        assert!(!msg.contains("battery") && !msg.contains("correct horse"), "{msg}");
        let err = SecretKey::parse(&text, None).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Input);
        assert!(err.to_string().contains("passphrase"), "{err}");
    }

    #[test]
    fn secret_key_debug_shows_no_secret() {
        let sk = key();
        let shown = format!("{sk:?}");
        assert!(shown.contains(&sk.key_id_hex()));
        assert!(!shown.contains(&hex::encode(sk.seed)) && !shown.contains(&hex::encode_upper(sk.seed)));
    }

    #[test]
    fn pickparams_matches_libsodium() {
        // minisign's defaults
        assert_eq!(pick_scrypt_params(DEFAULT_OPSLIMIT, DEFAULT_MEMLIMIT), (20, 8, 1));
        // opslimit is raised to 32768; small opslimit picks N from it with p = 1
        assert_eq!(pick_scrypt_params(0, 16 << 20), (10, 8, 1));
        assert_eq!(pick_scrypt_params(CHEAP_OPS, CHEAP_MEM), (10, 8, 1));
        // libsodium's INTERACTIVE limits (524288, 16 MiB): N = 2^14, r = 8, p = 1
        assert_eq!(pick_scrypt_params(524_288, 16_777_216), (14, 8, 1));
        // memory-bound branch with p > 1
        assert_eq!(pick_scrypt_params(1 << 30, 1 << 24), (14, 8, 2048));
        // values checked against the Python port in the lab's sigformats.py
        assert_eq!(pick_scrypt_params(32_768, 0), (1, 8, 512));
        assert_eq!(pick_scrypt_params(100_000, 3_000_000), (11, 8, 1));
        assert_eq!(pick_scrypt_params(1 << 40, 1 << 20), (10, 8, 33_554_432));
    }

    #[test]
    fn absurd_kdf_limits_are_refused_not_attempted() {
        let sk = key();
        // p = 2^25: far too much work
        assert!(sk.to_text_with_kdf_limits("pw", 1 << 40, 1 << 20).is_err());
        let err = sk.to_text_with_kdf_limits("pw", u64::MAX, u64::MAX).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Input);
        // the same limits read from a key file are refused before any work
        let text = sk.to_text_with_kdf_limits("pw", CHEAP_OPS, CHEAP_MEM).unwrap();
        let mut blob = B64.decode(text.lines().nth(1).unwrap()).unwrap();
        blob[38..54].fill(0xff);
        let text = format!("untrusted comment: x\n{}\n", B64.encode(&blob));
        let err = SecretKey::parse(&text, Some("pw")).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Input);
    }

    #[test]
    fn comments_that_minisign_could_not_read_back_are_refused() {
        let sk = key();
        for (tc, uc) in [("a\nb", "u"), ("a\rb", "u"), ("a\0b", "u"), ("t", "a\nb")] {
            let err = sk.sign(b"m", tc, uc).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Input);
        }
        assert!(sk.sign(b"m", &"x".repeat(MAX_TRUSTED_COMMENT), "u").is_ok());
        assert!(sk.sign(b"m", &"x".repeat(MAX_TRUSTED_COMMENT + 1), "u").is_err());
        assert!(sk.sign(b"m", "t", &"x".repeat(MAX_UNTRUSTED_COMMENT)).is_ok());
        assert!(sk.sign(b"m", "t", &"x".repeat(MAX_UNTRUSTED_COMMENT + 1)).is_err());
        // empty comments are fine
        let sig = sk.sign(b"m", "", "").unwrap();
        verify(&[sk.public_key()], &Signature::parse(&sig.to_text()).unwrap(), b"m").unwrap();
    }

    #[test]
    fn malformed_signatures_are_errors_not_panics() {
        let sk = key();
        let good = sk.sign(b"m", "tc", "uc").unwrap().to_text();
        let lines: Vec<&str> = good.lines().collect();
        let sig_blob = B64.decode(lines[1]).unwrap();
        let mut bad_alg = sig_blob.clone();
        bad_alg[0] = b'X';
        let cases = [
            String::new(),
            "garbage".to_string(),
            good.replace("untrusted comment: ", "comment: "),
            good.replace("trusted comment: tc", "tc"),
            format!("{}\n!!!!\n{}\n{}\n", lines[0], lines[2], lines[3]),
            format!("{}\n{}\n{}\n{}\n", lines[0], B64.encode(&sig_blob[..73]), lines[2], lines[3]),
            format!("{}\n{}\n{}\n{}\n", lines[0], B64.encode(&bad_alg), lines[2], lines[3]),
            format!("{}\n{}\n{}\n{}\n", lines[0], lines[1], lines[2], B64.encode([0u8; 63])),
            format!("{good}extra line\n"),
            lines[..3].join("\n"),
        ];
        for case in &cases {
            let err = Signature::parse(case).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Signature, "{case:?}");
            assert!(err.to_string().contains("malformed"), "{err}");
        }
        assert!(Signature::parse(&format!("{}\n{}\n{}\n{}\n", lines[0], B64.encode(&bad_alg), lines[2], lines[3]))
            .unwrap_err()
            .to_string()
            .contains("unknown signature algorithm"));
        // every truncation parses or fails cleanly
        for i in 0..good.len() {
            let _ = Signature::parse(&good[..i]);
        }
        // CRLF and a missing final newline are tolerated
        assert!(Signature::parse(&good.replace('\n', "\r\n")).is_ok());
        assert!(Signature::parse(good.trim_end()).is_ok());
    }

    #[test]
    fn malformed_keys_are_errors_not_panics() {
        let sk = key();
        let pub_text = sk.public_key().to_text();
        let sec_text = sk.to_text(None).unwrap();
        let sig_text = sk.sign(b"m", "tc", "uc").unwrap().to_text();
        for bad in ["", "\n\n", "untrusted comment: only a comment\n", "not base64 !!", "QUJD"] {
            assert_eq!(PublicKey::parse(bad).unwrap_err().kind, ErrorKind::Input, "{bad:?}");
            assert_eq!(SecretKey::parse(bad, None).unwrap_err().kind, ErrorKind::Input, "{bad:?}");
            assert_eq!(SecretKey::is_encrypted_text(bad).unwrap_err().kind, ErrorKind::Input, "{bad:?}");
        }
        // the wrong kind of file says what it looks like
        let err = PublicKey::parse(&sig_text).unwrap_err();
        assert!(err.to_string().contains("signature file"), "{err}");
        let err = PublicKey::parse(&sec_text).unwrap_err();
        assert!(err.to_string().contains("secret key"), "{err}");
        let err = SecretKey::parse(&pub_text, None).unwrap_err();
        assert!(err.to_string().contains("public key"), "{err}");
        // unknown algorithms
        let mut blob = B64.decode(pub_text.lines().nth(1).unwrap()).unwrap();
        blob[1] = b'X';
        let err = PublicKey::parse(&B64.encode(&blob)).unwrap_err();
        assert!(err.to_string().contains("signature algorithm"), "{err}");
        let sec_blob = B64.decode(sec_text.lines().nth(1).unwrap()).unwrap();
        let mut b = sec_blob.clone();
        b[2..4].copy_from_slice(b"Ar");
        let err = SecretKey::parse(&B64.encode(&b), None).unwrap_err();
        assert!(err.to_string().contains("key derivation"), "{err}");
        assert!(SecretKey::is_encrypted_text(&B64.encode(&b)).is_err());
        let mut b = sec_blob.clone();
        b[4..6].copy_from_slice(b"S2");
        let err = SecretKey::parse(&B64.encode(&b), None).unwrap_err();
        assert!(err.to_string().contains("checksum algorithm"), "{err}");
        // public half that does not belong to the seed (zero checksum, like -W)
        let mut b = sec_blob.clone();
        b[126..158].fill(0);
        b[100] ^= 1;
        let err = SecretKey::parse(&B64.encode(&b), None).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Input);
        assert!(err.to_string().contains("damaged"), "{err}");
        for i in 0..sec_text.len() {
            let _ = SecretKey::parse(&sec_text[..i], None);
            let _ = PublicKey::parse(&pub_text[..pub_text.len().min(i)]);
        }
    }

    #[test]
    fn key_files_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pub");
        let err = PublicKey::from_file(&missing).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Io);
        assert!(err.to_string().contains("missing.pub"));
        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "untrusted comment: x\nnope\n").unwrap();
        let err = SecretKey::from_file(&bad, None).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Input);
        assert!(err.to_string().contains("bad.key"), "{err}");
        let bin = dir.path().join("binary.pub");
        std::fs::write(&bin, [0xff, 0xfe, 0x00]).unwrap();
        assert_eq!(PublicKey::from_file(&bin).unwrap_err().kind, ErrorKind::Input);
        let sk = key();
        let good = dir.path().join("good.key");
        std::fs::write(&good, sk.to_text(None).unwrap()).unwrap();
        assert_eq!(SecretKey::from_file(&good, None).unwrap().public_key(), sk.public_key());
        let pubf = dir.path().join("good.pub");
        std::fs::write(&pubf, sk.public_key().to_text()).unwrap();
        assert_eq!(PublicKey::from_file(&pubf).unwrap(), sk.public_key());
    }
}
