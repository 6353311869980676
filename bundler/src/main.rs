//! `airlock-bundler`: thin command-line front of the bundler library. It parses flags,
//! reads passphrases, draws progress on a TTY, and maps errors to exit codes.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;

use airlock_bundler::create::{create, CreateOptions};
use airlock_bundler::spec::LoadedSpec;
use airlock_format::error::{Error, IoContext, Result};
use airlock_format::minisign::SecretKey;
use airlock_format::report::{Event, Reporter, Silent};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "airlock-bundler", version, about = "Build signed Airlock offline bundles")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Build a signed bundle from a bundle spec.
    Create {
        /// The bundle spec (bundle.yaml).
        spec: PathBuf,
        /// Output bundle file (parts become OUT.part001, OUT.part002, ...).
        #[arg(short, long)]
        output: PathBuf,
        /// minisign secret key to sign with.
        #[arg(long)]
        key: PathBuf,
        /// File holding the key's passphrase (else $AIRLOCK_KEY_PASSPHRASE, else a prompt).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// Split the bundle into parts of at most this size (e.g. 4G, 650M, 1048576).
        #[arg(long, value_parser = parse_size)]
        split_size: Option<u64>,
        /// The installer binary to carry in the bundle (overrides the spec's `installer`).
        #[arg(long)]
        installer: Option<PathBuf>,
        /// zstd compression level.
        #[arg(long, default_value_t = 3)]
        level: i32,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output_format: Output,
    },
    /// Generate a minisign key pair (compatible with stock minisign).
    Keygen {
        /// Public key file to write.
        #[arg(short = 'p', long, default_value = "airlock.pub")]
        public: PathBuf,
        /// Secret key file to write (mode 0600).
        #[arg(short = 's', long, default_value = "airlock.key")]
        secret: PathBuf,
        /// Write the secret key without a passphrase (like `minisign -G -W`).
        #[arg(short = 'W', long)]
        unencrypted: bool,
        /// File holding the passphrase (else $AIRLOCK_KEY_PASSPHRASE, else a prompt).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// Overwrite existing key files.
        #[arg(short, long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.kind.exit_code() as u8)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Create { spec, output, key, passphrase_file, split_size, installer, level, output_format } => {
            let spec = LoadedSpec::load(&spec)?;
            let key = load_key(&key, passphrase_file.as_deref())?;
            let created = match std::env::var("SOURCE_DATE_EPOCH") {
                Ok(v) => v
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| Error::input("SOURCE_DATE_EPOCH", format!("`{v}` is not a number of seconds")))?,
                Err(_) => {
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
                }
            };
            let threads = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
            let opts = CreateOptions { output, split_size, installer, created, level, threads };
            let progress = Progress::new(output_format == Output::Text);
            let reporter: &dyn Reporter = match &progress {
                Some(p) => p,
                None => &Silent,
            };
            let made = create(&spec, &key, &opts, reporter)?;
            if let Some(p) = progress {
                p.finish();
            }
            match output_format {
                Output::Json => {
                    let v = serde_json::json!({
                        "name": made.manifest.name,
                        "version": made.manifest.version,
                        "created": made.manifest.created,
                        "signer": key.key_id_hex(),
                        "files": made.parts.iter().map(|p| serde_json::json!({
                            "path": p.path, "size": p.size, "sha256": p.sha256.hex()
                        })).collect::<Vec<_>>(),
                        "checksums": made.checksums,
                        "checksums_signature": made.checksums_signature,
                    });
                    println!("{}", serde_json::to_string_pretty(&v).expect("json"));
                }
                Output::Text => {
                    let m = &made.manifest;
                    println!("bundle {} {} signed by key {}", m.name, m.version, key.key_id_hex());
                    println!(
                        "  {} images, {} charts, {} files, {} entries, {} bytes uncompressed",
                        m.images.len(),
                        m.charts.len(),
                        m.files.len(),
                        m.entries.len(),
                        m.total_size()
                    );
                    for k in &m.key_statements {
                        println!("  key statement {} ({})", k.label(), k.path);
                    }
                    for p in &made.parts {
                        println!("  wrote {} ({} bytes)", p.path.display(), p.size);
                    }
                    println!("  wrote {} and {}", made.checksums.display(), made.checksums_signature.display());
                }
            }
            Ok(())
        }
        Command::Keygen { public, secret, unencrypted, passphrase_file, force } => {
            for p in [&public, &secret] {
                if p.exists() && !force {
                    return Err(Error::input(p.display().to_string(), "already exists")
                        .with_hint("pass --force to overwrite it (the old key is then lost)"));
                }
            }
            let key = SecretKey::generate()?;
            let passphrase = if unencrypted { None } else { Some(new_passphrase(passphrase_file.as_deref())?) };
            let text = key.to_text(passphrase.as_deref())?;
            write_secret(&secret, text.as_bytes())?;
            std::fs::write(&public, key.public_key().to_text()).at(&public)?;
            println!("key {} written: public {} , secret {}", key.key_id_hex(), public.display(), secret.display());
            Ok(())
        }
    }
}

/// Secret keys are created 0600 from the start, never chmod-ed afterwards.
fn write_secret(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).at(path)?;
    f.write_all(bytes).at(path)
}

fn passphrase_from(file: Option<&Path>) -> Result<Option<String>> {
    if let Some(f) = file {
        let s = std::fs::read_to_string(f).at(f)?;
        return Ok(Some(s.trim_end_matches(['\n', '\r']).to_string()));
    }
    Ok(std::env::var("AIRLOCK_KEY_PASSPHRASE").ok())
}

fn load_key(path: &Path, passphrase_file: Option<&Path>) -> Result<SecretKey> {
    let text = std::fs::read_to_string(path).at(path)?;
    if !SecretKey::is_encrypted_text(&text).map_err(|e| e.within(path.display()))? {
        return SecretKey::parse(&text, None).map_err(|e| e.within(path.display()));
    }
    let pass = match passphrase_from(passphrase_file)? {
        Some(p) => p,
        None if std::io::stdin().is_terminal() => dialoguer::Password::new()
            .with_prompt(format!("Passphrase for {}", path.display()))
            .interact()
            .map_err(|e| Error::input("passphrase", e.to_string()))?,
        None => {
            return Err(Error::input(
                path.display().to_string(),
                "the key is passphrase-protected and no passphrase was given",
            )
            .with_hint("pass --passphrase-file FILE or set AIRLOCK_KEY_PASSPHRASE (no terminal to ask on)"))
        }
    };
    SecretKey::parse(&text, Some(&pass)).map_err(|e| e.within(path.display()))
}

fn new_passphrase(file: Option<&Path>) -> Result<String> {
    if let Some(p) = passphrase_from(file)? {
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::input("keygen", "no passphrase given and no terminal to ask on")
            .with_hint("pass --passphrase-file FILE, set AIRLOCK_KEY_PASSPHRASE, or use -W for an unencrypted key"));
    }
    dialoguer::Password::new()
        .with_prompt("Passphrase for the new key")
        .with_confirmation("Repeat the passphrase", "the passphrases differ")
        .interact()
        .map_err(|e| Error::input("passphrase", e.to_string()))
}

/// Parses `4G`, `650M`, `512K`, `1GiB`, or plain bytes.
fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a size (e.g. 4G, 650M, 1048576)"))?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(format!("`{s}`: unknown unit (use K, M, G or T)")),
    };
    let v = n.checked_mul(mult).ok_or_else(|| format!("`{s}` is too large"))?;
    if v == 0 {
        return Err("the split size must be greater than zero".into());
    }
    Ok(v)
}

/// Progress on a TTY: one bar per long phase. Nothing when stderr is not a terminal.
struct Progress {
    bar: Mutex<Option<indicatif::ProgressBar>>,
}

impl Progress {
    fn new(enabled: bool) -> Option<Self> {
        (enabled && std::io::stderr().is_terminal()).then(|| Self { bar: Mutex::new(None) })
    }
    fn finish(self) {
        if let Some(b) = self.bar.into_inner().ok().flatten() {
            b.finish_and_clear();
        }
    }
}

impl Reporter for Progress {
    fn event(&self, event: Event<'_>) {
        let mut g = self.bar.lock().expect("progress lock");
        match event {
            Event::Phase { name, total } => {
                if let Some(b) = g.take() {
                    b.finish_and_clear();
                }
                let b = match total {
                    Some(t) => indicatif::ProgressBar::new(t).with_style(
                        indicatif::ProgressStyle::with_template(
                            "{msg:30} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                        )
                        .expect("template")
                        .progress_chars("=> "),
                    ),
                    None => indicatif::ProgressBar::new_spinner(),
                };
                b.set_message(name.to_string());
                *g = Some(b);
            }
            Event::Progress { bytes } => {
                if let Some(b) = g.as_ref() {
                    b.inc(bytes)
                }
            }
            Event::Warning(w) => match g.as_ref() {
                Some(b) => b.println(format!("warning: {w}")),
                None => eprintln!("warning: {w}"),
            },
            Event::Entry { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_units_and_reject_nonsense() {
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("650M"), Ok(650 << 20));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("4X").is_err());
        assert!(parse_size("").is_err());
    }
}
