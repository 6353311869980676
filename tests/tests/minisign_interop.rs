//! Interoperability of `airlock_format::minisign` with the stock `minisign` 0.11 binary,
//! in both directions: stock minisign checks what we sign (support verifies bundles with
//! `minisign -V`), and we use keys and check signatures that stock minisign makes
//! (vendors may keep their keys in minisign).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use airlock_format::minisign::{verify, PublicKey, SecretKey, Signature};
use airlock_format::ErrorKind;
use tempfile::TempDir;

/// Runs `minisign args…`, feeding `stdin` (passphrases) when given.
fn minisign(bin: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start minisign");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().expect("wait for minisign")
}

fn show(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "minisign failed: {}", show(&out));
    out
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

struct Files {
    dir: TempDir,
}

impl Files {
    fn new() -> Self {
        Self { dir: TempDir::new().unwrap() }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
    /// A message that is not all one byte, large enough to span several read buffers.
    fn message(&self, name: &str) -> (PathBuf, Vec<u8>) {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        (self.write(name, &data), data)
    }
}

fn stock_verify(bin: &Path, pubkey: &Path, message: &Path, sig: &Path) -> Output {
    minisign(bin, &["-V", "-H", "-p", p(pubkey), "-m", p(message), "-x", p(sig)], None)
}

#[test]
fn stock_minisign_verifies_our_signature_and_rejects_a_flipped_byte() {
    let Some(bin) = airlock_tests::require_tool("minisign") else {
        return;
    };
    let f = Files::new();
    let sk = SecretKey::generate().unwrap();
    let pubkey = f.write("airlock.pub", sk.public_key().to_text());
    let (message, mut data) = f.message("bundle.bin");
    let sig = sk.sign(&data, "timestamp:1700000000\tfile:bundle.bin\thashed", "signature from airlock").unwrap();
    let sig_file = f.write("bundle.bin.minisig", sig.to_text());

    ok(stock_verify(&bin, &pubkey, &message, &sig_file));
    // the inline form support may paste from a ticket works too
    let b64 = sk.public_key().to_base64();
    ok(minisign(&bin, &["-V", "-H", "-P", &b64, "-m", p(&message), "-x", p(&sig_file)], None));

    data[123_456] ^= 0x01;
    std::fs::write(&message, &data).unwrap();
    let out = stock_verify(&bin, &pubkey, &message, &sig_file);
    assert!(!out.status.success(), "minisign accepted a flipped byte: {}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Signature verification failed"), "{}", show(&out));
}

#[test]
fn stock_minisign_rejects_our_signature_with_an_altered_trusted_comment() {
    let Some(bin) = airlock_tests::require_tool("minisign") else {
        return;
    };
    let f = Files::new();
    let sk = SecretKey::generate().unwrap();
    let pubkey = f.write("airlock.pub", sk.public_key().to_text());
    let (message, data) = f.message("bundle.bin");
    let sig = sk.sign(&data, "release 1.2.3", "signature from airlock").unwrap();
    let sig_file = f.write("bundle.bin.minisig", sig.to_text().replace("release 1.2.3", "release 9.9.9"));
    let out = stock_verify(&bin, &pubkey, &message, &sig_file);
    assert!(!out.status.success(), "minisign accepted an altered trusted comment: {}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Comment signature verification failed"), "{}", show(&out));
}

#[test]
fn stock_minisign_shows_the_trusted_comment_we_signed() {
    let Some(bin) = airlock_tests::require_tool("minisign") else {
        return;
    };
    let f = Files::new();
    let sk = SecretKey::generate().unwrap();
    let pubkey = f.write("airlock.pub", sk.public_key().to_text());
    let (message, data) = f.message("demo.airlock");
    let tc = "timestamp:1700000000\tfile:demo.airlock\thashed\tairlock bundle demo 1.2.3";
    let sig_file = f.write("demo.airlock.minisig", sk.sign(&data, tc, "signature from airlock").unwrap().to_text());

    let out = ok(stock_verify(&bin, &pubkey, &message, &sig_file));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("Trusted comment: {tc}\n")), "{}", show(&out));
    // -Q prints the trusted comment alone
    let out = ok(minisign(&bin, &["-V", "-Q", "-p", p(&pubkey), "-m", p(&message), "-x", p(&sig_file)], None));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{tc}\n"));
}

#[test]
fn we_sign_with_an_unencrypted_key_made_by_stock_minisign() {
    let Some(bin) = airlock_tests::require_tool("minisign") else {
        return;
    };
    let f = Files::new();
    let (pub_path, sec_path) = (f.path("vendor.pub"), f.path("vendor.key"));
    ok(minisign(&bin, &["-G", "-W", "-p", p(&pub_path), "-s", p(&sec_path)], None));

    let pk = PublicKey::from_file(&pub_path).unwrap();
    let sec_text = std::fs::read_to_string(&sec_path).unwrap();
    assert!(!SecretKey::is_encrypted_text(&sec_text).unwrap());
    let sk = SecretKey::from_file(&sec_path, None).unwrap();
    assert_eq!(sk.public_key(), pk);
    // our .pub text is byte for byte what minisign wrote
    assert_eq!(pk.to_text(), std::fs::read_to_string(&pub_path).unwrap());

    let (message, data) = f.message("bundle.bin");
    let sig_file = f.write("bundle.bin.minisig", sk.sign(&data, "signed by airlock", "u").unwrap().to_text());
    ok(stock_verify(&bin, &pub_path, &message, &sig_file));
}

#[test]
fn stock_minisign_signs_with_our_unencrypted_secret_key() {
    let Some(bin) = airlock_tests::require_tool("minisign") else {
        return;
    };
    let f = Files::new();
    let sk = SecretKey::generate().unwrap();
    let sec_path = f.write("airlock.key", sk.to_text(None).unwrap());
    let pub_path = f.write("airlock.pub", sk.public_key().to_text());
    let (message, data) = f.message("bundle.bin");
    let sig_path = f.path("bundle.bin.minisig");
    // -p makes minisign check the new signature against our public key as well
    ok(minisign(&bin, &["-S", "-s", p(&sec_path), "-p", p(&pub_path), "-m", p(&message), "-x", p(&sig_path)], None));
    let sig = Signature::parse(&std::fs::read_to_string(&sig_path).unwrap()).unwrap();
    assert_eq!(verify(&[sk.public_key()], &sig, &data).unwrap(), sk.public_key());
}

#[test]
fn we_decrypt_a_passphrase_protected_key_made_by_stock_minisign() {
    let Some(bin) = airlock_tests::require_tool("minisign") else {
        return;
    };
    let f = Files::new();
    let (pub_path, sec_path) = (f.path("vendor.pub"), f.path("vendor.key"));
    ok(minisign(&bin, &["-G", "-p", p(&pub_path), "-s", p(&sec_path)], Some("pw\npw\n")));

    let sec_text = std::fs::read_to_string(&sec_path).unwrap();
    assert!(SecretKey::is_encrypted_text(&sec_text).unwrap());
    // minisign's defaults: scrypt N = 2^20, r = 8, p = 1 (about 1 GiB, a few seconds)
    let sk = SecretKey::from_file(&sec_path, Some("pw")).unwrap();
    let pk = PublicKey::from_file(&pub_path).unwrap();
    assert_eq!(sk.public_key(), pk);

    let (message, data) = f.message("bundle.bin");
    let sig_file = f.write("bundle.bin.minisig", sk.sign(&data, "signed by airlock", "u").unwrap().to_text());
    ok(stock_verify(&bin, &pub_path, &message, &sig_file));

    let err = SecretKey::from_file(&sec_path, Some("not-pw")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Input);
    let text = err.to_string();
    assert!(text.contains("wrong passphrase"), "{text}");
    assert!(text.contains("vendor.key"), "{text}");
    assert!(!text.contains("not-pw"), "the error shows the passphrase: {text}");

    let err = SecretKey::from_file(&sec_path, None).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Input);
    assert!(err.to_string().contains("passphrase"), "{err}");
}

#[test]
fn we_verify_stock_minisign_signatures_prehashed_and_legacy() {
    let Some(bin) = airlock_tests::require_tool("minisign") else {
        return;
    };
    let f = Files::new();
    let (pub_path, sec_path) = (f.path("vendor.pub"), f.path("vendor.key"));
    ok(minisign(&bin, &["-G", "-W", "-p", p(&pub_path), "-s", p(&sec_path)], None));
    let pk = PublicKey::from_file(&pub_path).unwrap();
    let other = SecretKey::generate().unwrap().public_key();
    let (message, data) = f.message("bundle.bin");

    // default (prehashed "ED") with the default trusted comment
    let sig_path = f.path("prehashed.minisig");
    ok(minisign(&bin, &["-S", "-s", p(&sec_path), "-m", p(&message), "-x", p(&sig_path)], None));
    let sig_text = std::fs::read_to_string(&sig_path).unwrap();
    let sig = Signature::parse(&sig_text).unwrap();
    assert_eq!(sig.to_text(), sig_text, "our writer does not reproduce minisign's file");
    assert!(sig.is_prehashed());
    assert!(sig.trusted_comment().starts_with("timestamp:"), "{}", sig.trusted_comment());
    assert!(sig.trusted_comment().ends_with("\tfile:bundle.bin\thashed"), "{}", sig.trusted_comment());
    assert_eq!(sig.key_id(), pk.key_id());
    assert_eq!(verify(&[other, pk], &sig, &data).unwrap(), pk);

    // legacy ("Ed", minisign -l)
    let legacy_path = f.path("legacy.minisig");
    let legacy_args = ["-S", "-l", "-s", p(&sec_path), "-m", p(&message), "-x", p(&legacy_path), "-t", "legacy tc"];
    ok(minisign(&bin, &legacy_args, None));
    let legacy_text = std::fs::read_to_string(&legacy_path).unwrap();
    let legacy = Signature::parse(&legacy_text).unwrap();
    assert_eq!(legacy.to_text(), legacy_text);
    assert!(!legacy.is_prehashed());
    assert_eq!(legacy.trusted_comment(), "legacy tc");
    assert_eq!(verify(&[pk], &legacy, &data).unwrap(), pk);

    for s in [&sig, &legacy] {
        // another key: refused, naming both key ids
        let err = verify(&[other], s, &data).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Signature);
        let text = err.to_string();
        assert!(text.contains(&pk.key_id_hex()) && text.contains(&other.key_id_hex()), "{text}");
        // other content: refused
        let mut changed = data.clone();
        changed[0] ^= 0x80;
        let err = verify(&[pk], s, &changed).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Signature);
        assert!(err.to_string().contains("does not match the content"), "{err}");
    }
}

#[test]
fn stock_minisign_signs_with_our_encrypted_secret_key_at_default_limits() {
    let Some(bin) = airlock_tests::require_tool("minisign") else {
        return;
    };
    let f = Files::new();
    let sk = SecretKey::generate().unwrap();
    // minisign's default scrypt limits: about 1 GiB and a few seconds, here and in minisign
    let sec_text = sk.to_text(Some("pw")).unwrap();
    assert!(sec_text.starts_with("untrusted comment: minisign encrypted secret key\n"));
    let sec_path = f.write("airlock.key", &sec_text);
    let pub_path = f.write("airlock.pub", sk.public_key().to_text());
    let (message, data) = f.message("bundle.bin");
    let sig_path = f.path("bundle.bin.minisig");
    let args = ["-S", "-s", p(&sec_path), "-m", p(&message), "-x", p(&sig_path), "-t", "signed by stock minisign"];
    ok(minisign(&bin, &args, Some("pw\n")));

    let sig = Signature::parse(&std::fs::read_to_string(&sig_path).unwrap()).unwrap();
    assert_eq!(sig.trusted_comment(), "signed by stock minisign");
    assert_eq!(verify(&[sk.public_key()], &sig, &data).unwrap(), sk.public_key());
    ok(stock_verify(&bin, &pub_path, &message, &sig_path));
}
