//! minisign keys and signatures: our parsers alone, and ours against the `minisign`
//! crate by minisign's author (the differential oracle).

use std::io::Cursor;

use airlock_format::minisign::{self as ours, PublicKey, SecretKey, Signature};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::bytes::Input;

/// The parsers on their own: whatever parses writes back to text that parses to the
/// same thing, and nothing panics. A secret key is parsed without a passphrase only
/// (an encrypted one with fuzzer-chosen scrypt limits would be slow by design).
pub fn parse(data: &[u8]) {
    let mut input = Input::new(data);
    let pk_text = String::from_utf8_lossy(input.piece()).into_owned();
    let sig_text = String::from_utf8_lossy(input.piece()).into_owned();
    let sk_text = String::from_utf8_lossy(input.piece()).into_owned();
    let message = input.rest();

    let pk = PublicKey::parse(&pk_text).ok();
    if let Some(pk) = pk {
        let again = PublicKey::parse(&pk.to_text()).expect("a public key we wrote parses");
        assert_eq!(again, pk, "public key round trip");
        assert_eq!(PublicKey::parse(&pk.to_base64()).expect("bare base64 key"), pk);
    }
    let sig = Signature::parse(&sig_text).ok();
    if let Some(sig) = &sig {
        let again = Signature::parse(&sig.to_text()).expect("a signature we wrote parses");
        assert_eq!(&again, sig, "signature round trip");
    }
    let _ = SecretKey::is_encrypted_text(&sk_text);
    if let Ok(false) = SecretKey::is_encrypted_text(&sk_text) {
        if let Ok(sk) = SecretKey::parse(&sk_text, None) {
            // A key that parses signs, and what it signs verifies under its public half.
            let pk = sk.public_key();
            if let Ok(s) = sk.sign(message, "fuzz", "fuzz") {
                ours::verify(&[pk], &s, message).expect("a fresh signature verifies");
            }
        }
    }
    if let (Some(pk), Some(sig)) = (pk, sig) {
        let _ = ours::verify(&[pk], &sig, message);
        let mut prehash = ours::Prehash::new();
        prehash.update(message);
        let _ = ours::verify_prehashed(&[pk], &sig, prehash);
    }
}

/// The 158-byte unencrypted secret key blob for `seed` and `key_id`, with its checksum
/// (the layout both implementations read).
pub fn secret_key_blob(seed: &[u8; 32], key_id: &[u8; 8]) -> Vec<u8> {
    let kp = Ed25519KeyPair::from_seed_unchecked(seed).expect("any 32 bytes are a seed");
    let pk = kp.public_key().as_ref().to_vec();
    let mut chk = Blake2b::<U32>::new();
    chk.update(b"Ed");
    chk.update(key_id);
    chk.update(seed);
    chk.update(&pk);
    let mut blob = Vec::with_capacity(158);
    blob.extend_from_slice(b"Ed");
    blob.extend_from_slice(&[0, 0]);
    blob.extend_from_slice(b"B2");
    blob.extend_from_slice(&[0; 32 + 8 + 8]);
    blob.extend_from_slice(key_id);
    blob.extend_from_slice(seed);
    blob.extend_from_slice(&pk);
    blob.extend_from_slice(&chk.finalize());
    blob
}

/// Our secret key for `seed` and `key_id`.
pub fn our_key(seed: &[u8; 32], key_id: &[u8; 8]) -> SecretKey {
    let text = format!("untrusted comment: fuzz\n{}\n", B64.encode(secret_key_blob(seed, key_id)));
    SecretKey::parse(&text, None).expect("a key blob we made parses")
}

/// Differential: keys, signatures and messages made from the fuzzer's bytes go to our
/// verifier and the crate's, and the verdict, key id and trusted comment must agree.
///
/// Input: a mode byte. Mode 0: a public key text, a signature text and the message,
/// as given. Mode 1: a key pair derived from a 32-byte seed and 8-byte key id, a
/// trusted comment and a message; the message is signed (by us, or by the crate when
/// flag bit 0 is set), then the rest of the input is a list of 4-byte mutations
/// (which text, where, xor) applied to the public key text, the signature text or the
/// message before both verify.
pub fn differential(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte();
    if mode & 1 == 0 {
        let pk = String::from_utf8_lossy(input.piece()).into_owned();
        let sig = String::from_utf8_lossy(input.piece()).into_owned();
        compare(&pk, &sig, input.rest());
        return;
    }
    let seed = input.array::<32>();
    let key_id = input.array::<8>();
    let flags = input.byte();
    let tc = String::from_utf8_lossy(input.piece()).into_owned();
    let mut message = input.piece().to_vec();
    let sk = our_key(&seed, &key_id);
    let mut pk_text = sk.public_key().to_text().into_bytes();
    let sig_text = if flags & 1 == 0 {
        match sk.sign(&message, &tc, "fuzz") {
            Ok(s) => s.to_text(),
            Err(_) => return, // a comment we refuse to sign (newline, too long)
        }
    } else {
        if tc.contains(['\n', '\r']) {
            return;
        }
        let theirs = minisign::SecretKey::from_bytes(&secret_key_blob(&seed, &key_id)).expect("key blob");
        match minisign::sign(None, &theirs, Cursor::new(&message), Some(&tc), Some("fuzz")) {
            Ok(b) => b.into_string(),
            Err(_) => return,
        }
    };
    let mut sig_text = sig_text.into_bytes();
    let mut mutated = false;
    while !input.is_empty() {
        let which = input.byte();
        let at = input.u16() as usize;
        let xor = input.byte();
        let buf = match which % 3 {
            0 => &mut pk_text,
            1 => &mut sig_text,
            _ => &mut message,
        };
        if !buf.is_empty() {
            let n = buf.len();
            buf[at % n] ^= xor;
            mutated |= xor != 0;
        }
    }
    // Unmutated, our own signature must verify with both.
    let (ok_ours, ok_theirs) =
        compare(&String::from_utf8_lossy(&pk_text), &String::from_utf8_lossy(&sig_text), &message);
    if !mutated && flags & 1 == 0 && tc.trim() == tc {
        assert!(ok_ours && ok_theirs, "a fresh signature is refused: ours {ok_ours}, theirs {ok_theirs}");
    }
}

/// The base64 of line `n` (0-based) decodes to exactly `len` bytes.
fn line_decodes_to(text: &str, n: usize, len: usize) -> bool {
    text.lines().nth(n).and_then(|l| B64.decode(l.trim()).ok()).is_some_and(|b| b.len() == len)
}

/// Both verdicts on one public key text, signature text and message; panics where they
/// differ other than in the ways listed (and explained) below.
pub fn compare(pk_text: &str, sig_text: &str, message: &[u8]) -> (bool, bool) {
    // Public keys.
    let our_pk = PublicKey::parse(pk_text).ok();
    let their_pk = minisign::PublicKeyBox::from_string(pk_text).and_then(|b| b.into_public_key()).ok();
    if let (Some(o), Some(t)) = (&our_pk, &their_pk) {
        let tb = t.to_bytes();
        assert_eq!(o.key_id().as_slice(), t.keynum(), "public key id");
        assert_eq!(o.ed25519_bytes().as_slice(), &tb[10..42], "public key bytes");
    }
    if let (None, Some(t)) = (&our_pk, &their_pk) {
        // The crate does not look at the algorithm bytes of a public key; we refuse
        // anything but "Ed", as minisign does.
        assert_ne!(&t.to_bytes()[..2], b"Ed", "the crate reads a public key we refuse: {pk_text:?}");
    }

    // Signatures. The crate indexes the global signature as 64 bytes without checking
    // its length (it would panic), so it only sees signatures whose line 4 has 64.
    let our_sig = Signature::parse(sig_text).ok();
    let their_sig =
        if line_decodes_to(sig_text, 3, 64) { minisign::SignatureBox::from_string(sig_text).ok() } else { None };
    if let (Some(o), Some(t)) = (&our_sig, &their_sig) {
        assert_eq!(o.key_id().as_slice(), t.keynum(), "signature key id");
        assert_eq!(o.is_prehashed(), t.is_prehashed(), "signature algorithm");
        let tc = t.trusted_comment().expect("a parsed box has a trusted comment");
        // The crate trims the trusted comment; minisign (and we) keep it verbatim.
        assert_eq!(o.trusted_comment().trim(), tc, "trusted comment");
    }

    let ok_ours = match (&our_pk, &our_sig) {
        (Some(pk), Some(sig)) => ours::verify(&[*pk], sig, message).is_ok(),
        _ => false,
    };
    // We read key files more leniently than the crate and minisign on layout alone
    // (leading blank lines, spaces around the key, a bare key line: what people paste
    // into --pubkey files). Where only the layout kept the crate from reading the key,
    // it verifies with the same key bytes, so the verdicts on signatures still compare.
    let their_pk = their_pk.or_else(|| our_pk.and_then(|k| minisign::PublicKey::from_base64(&k.to_base64()).ok()));
    let ok_theirs = match (&their_pk, &their_sig) {
        (Some(pk), Some(sig)) => minisign::verify(pk, sig, Cursor::new(message), true, false, true).is_ok(),
        _ => false,
    };
    if ok_ours && !ok_theirs {
        // Allowed only where the crate departs from minisign: it trims the trusted
        // comment before checking the global signature over it.
        let tc = our_sig.as_ref().map(|s| s.trusted_comment()).unwrap_or_default();
        assert_ne!(tc.trim(), tc, "we accept what the crate refuses:\n{pk_text:?}\n{sig_text:?}\n{message:?}");
    }
    if ok_theirs && !ok_ours {
        // Allowed only where we are stricter on purpose: a signature file with more
        // than four lines, or a signature line holding more than 74 bytes (the crate
        // reads the first 74 and ignores the rest).
        // Or where the crate is laxer than minisign: it never looks at a public key's
        // algorithm bytes (stock minisign refuses anything but "Ed", as we do).
        let extra_lines = sig_text.split('\n').skip(4).any(|l| !l.trim().is_empty());
        let long_sig = !line_decodes_to(sig_text, 1, 74);
        let key_alg = our_pk.is_none() && their_pk.as_ref().is_some_and(|k| &k.to_bytes()[..2] != b"Ed");
        assert!(
            key_alg || (our_pk.is_some() && (extra_lines || long_sig)),
            "the crate accepts what we refuse:\n{pk_text:?}\n{sig_text:?}\n{message:?}"
        );
    }
    if ok_ours && ok_theirs {
        let (o, t) = (our_sig.as_ref().unwrap(), their_sig.as_ref().unwrap());
        assert_eq!(o.key_id().as_slice(), t.keynum());
        assert_eq!(o.trusted_comment(), t.trusted_comment().unwrap());
    }
    (ok_ours, ok_theirs)
}
