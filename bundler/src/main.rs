//! `airlock-bundler`: thin command-line front of the bundler library. It parses flags,
//! reads passphrases, draws progress on a TTY (airlock-term, shared with `airlock`),
//! and maps errors to exit codes.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use airlock_bundler::create::{create_with, CreateOptions};
use airlock_bundler::fetch::PullSetup;
use airlock_bundler::lock::LockMode;
use airlock_bundler::registry::{default_cache_dir, Credentials, PullOptions};
use airlock_bundler::spec::LoadedSpec;
use airlock_format::error::{Error, IoContext, Result};
use airlock_format::minisign::SecretKey;
use airlock_term::docs::{CompletionsArgs, ManArgs};
use airlock_term::{say, GlobalArgs, Output, Ui};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "airlock-bundler", version, about = "Build signed Airlock offline bundles")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    global: GlobalArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Build a signed bundle from a bundle spec.
    Create {
        /// The bundle spec (bundle.yaml).
        spec: PathBuf,
        /// The bundle file to write (parts become FILE.part001, FILE.part002, ...).
        #[arg(short = 'o', long = "output-file", value_name = "FILE")]
        output_file: PathBuf,
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
        /// Build a delta bundle over this previous release: its bundle (or first part)
        /// or the manifest.json taken out of it. Entries it already has are left out.
        #[arg(long, value_name = "PREVIOUS")]
        base: Option<PathBuf>,
        /// Require the --base to be signed by this public key (repeatable); without it
        /// the vendor's own file is trusted as input.
        #[arg(long, value_name = "PUBKEY", requires = "base")]
        base_pubkey: Vec<PathBuf>,
        #[command(flatten)]
        pull: PullArgs,
    },
    /// Download the spec's registry images into the cache and pin them in bundle.lock,
    /// without building a bundle.
    Pull {
        /// The bundle spec (bundle.yaml).
        spec: PathBuf,
        #[command(flatten)]
        pull: PullArgs,
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
    /// Print the JSON Schema of a file the bundler reads (docs/schemas/), for editors.
    Schema {
        /// Which file: `bundle-spec` (bundle.yaml).
        #[arg(value_enum)]
        file: SchemaFile,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Write the man pages of every command into DIR (packaging/install-docs.sh).
    #[command(hide = true)]
    Man(ManArgs),
}

/// The files `airlock-bundler schema` has a schema for.
#[derive(Clone, Copy, clap::ValueEnum)]
enum SchemaFile {
    /// `bundle.yaml`.
    BundleSpec,
}

/// How `docker://` images are pulled.
#[derive(clap::Args)]
struct PullArgs {
    /// Cache shared across builds: registry blobs, the SBOM's findings per layer [default:
    /// $XDG_CACHE_HOME/airlock or ~/.cache/airlock].
    #[arg(long, env = "AIRLOCK_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Resolve every tag again and rewrite bundle.lock.
    #[arg(long, conflicts_with = "locked")]
    update_lock: bool,
    /// Fail instead of changing bundle.lock (for CI).
    #[arg(long)]
    locked: bool,
    /// Registry logins in docker config.json format (else $DOCKER_CONFIG/config.json or ~/.docker/config.json).
    #[arg(long, env = "REGISTRY_AUTH_FILE")]
    auth_file: Option<PathBuf>,
    /// Log in to this registry host with $AIRLOCK_REGISTRY_USERNAME and $AIRLOCK_REGISTRY_PASSWORD.
    #[arg(long, value_name = "HOST")]
    creds: Vec<String>,
    /// Blob downloads at once.
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// Retries of a failed request or interrupted download (exponential backoff).
    #[arg(long, default_value_t = 5)]
    retries: u32,
    /// Bytes per second per download (e.g. 10M).
    #[arg(long, value_parser = parse_size)]
    limit_rate: Option<u64>,
}

impl PullArgs {
    fn setup(&self) -> Result<PullSetup> {
        let mut options = PullOptions::new(self.cache_dir.clone().unwrap_or_else(default_cache_dir));
        options.concurrency = self.jobs.max(1);
        options.retries = self.retries;
        options.limit_rate = self.limit_rate;
        options.credentials = self.credentials()?;
        let lock = match (self.update_lock, self.locked) {
            (true, _) => LockMode::Update,
            (_, true) => LockMode::Locked,
            _ => LockMode::Use,
        };
        Ok(PullSetup { options, lock })
    }

    fn credentials(&self) -> Result<Credentials> {
        let mut c = Credentials::default();
        if !self.creds.is_empty() {
            let get = |v: &str| {
                std::env::var(v).map_err(|_| {
                    Error::input("--creds", format!("${v} is not set"))
                        .with_hint("set AIRLOCK_REGISTRY_USERNAME and AIRLOCK_REGISTRY_PASSWORD for --creds HOST")
                })
            };
            let (user, pass) = (get("AIRLOCK_REGISTRY_USERNAME")?, get("AIRLOCK_REGISTRY_PASSWORD")?);
            for host in &self.creds {
                c.insert(host, user.clone(), pass.clone());
            }
        }
        let files = match &self.auth_file {
            Some(f) => vec![f.clone()],
            None => Credentials::default_docker_configs(),
        };
        for f in files {
            c.add_docker_config(&f)?;
        }
        Ok(c)
    }
}

fn main() -> ExitCode {
    // `create --output FILE` named the bundle file before docs/cli.md: it still does.
    let cli: Cli = airlock_term::args::parse_keeping_output_file("create");
    // The values `--verbose` must never show, should one reach a logged line.
    let secrets = ["AIRLOCK_KEY_PASSPHRASE", "AIRLOCK_REGISTRY_PASSWORD"];
    let redact = airlock_term::verbose::replace_values(secrets.iter().filter_map(|v| std::env::var(v).ok()).collect());
    let ui = Ui::init(&cli.global, redact);
    match run(cli.command, ui) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.kind.exit_code() as u8)
        }
    }
}

fn run(command: Command, ui: Ui) -> Result<()> {
    match command {
        Command::Create {
            spec,
            output_file,
            key,
            passphrase_file,
            split_size,
            installer,
            level,
            base,
            base_pubkey,
            pull,
        } => {
            let spec = LoadedSpec::load(&spec)?;
            let base = match &base {
                Some(path) => {
                    let keys = base_pubkey
                        .iter()
                        .map(|p| airlock_format::minisign::PublicKey::from_file(p))
                        .collect::<Result<Vec<_>>>()?;
                    Some(airlock_bundler::delta::load_base(path, &keys)?)
                }
                None => None,
            };
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
            let opts = CreateOptions { output: output_file, split_size, installer, created, level, threads, base };
            let setup = pull.setup()?;
            let progress = ui.progress();
            let made = create_with(&spec, &key, &opts, &setup, &progress)?;
            progress.finish();
            match ui.output {
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
                        "discovered_images": made.discovered,
                        "delta": made.delta.as_ref().map(|d| serde_json::json!({
                            "base": d.base,
                            "entries_from_base": d.from_base,
                            "bytes_from_base": d.from_base_bytes,
                            "entries_carried": d.carried,
                            "bytes_carried": d.carried_bytes,
                        })),
                    });
                    airlock_term::print_json(&v);
                }
                Output::Text => {
                    let m = &made.manifest;
                    say!("bundle {} {} signed by key {}", m.name, m.version, key.key_id_hex());
                    say!(
                        "  {}, {}, {}, {}, {} bytes uncompressed",
                        airlock_term::count(m.images.len(), "image", "images"),
                        airlock_term::count(m.charts.len(), "chart", "charts"),
                        airlock_term::count(m.files.len(), "file", "files"),
                        airlock_term::count(m.entries.len(), "entry", "entries"),
                        m.total_size()
                    );
                    for k in &m.key_statements {
                        say!("  key statement {} ({})", k.label(), k.path);
                    }
                    if let Some(d) = &made.delta {
                        say!(
                            "  delta over {}: carries {} entries ({} bytes), leaves {} entries ({} bytes) to the base",
                            d.base.label(),
                            d.carried,
                            d.carried_bytes,
                            d.from_base,
                            d.from_base_bytes
                        );
                    }
                    for (image, asked) in &made.discovered {
                        say!("  discovered image {image}");
                        for a in asked {
                            say!("    asked for by {a}");
                        }
                    }
                    for p in &made.parts {
                        say!("  wrote {} ({} bytes)", p.path.display(), p.size);
                    }
                    say!("  wrote {} and {}", made.checksums.display(), made.checksums_signature.display());
                }
            }
            Ok(())
        }
        Command::Pull { spec, pull } => {
            let spec = LoadedSpec::load(&spec)?;
            let setup = pull.setup()?;
            let progress = ui.progress();
            let locked = airlock_bundler::fetch::pull(&spec, &setup, &progress)?;
            progress.finish();
            let cache = &setup.options.cache_dir;
            let images: Vec<_> =
                locked.iter().map(|l| serde_json::json!({"digest": l.digest, "from": l.from})).collect();
            ui.show(&serde_json::json!({ "images": images, "cache_dir": cache }), |_| {
                for l in &locked {
                    say!("{} {}", l.digest, l.from);
                }
                say!("{} registry images cached in {}", locked.len(), cache.display());
            });
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
            let id = key.key_id_hex();
            ui.show(&serde_json::json!({ "key_id": id, "public": public, "secret": secret }), |_| {
                say!("key {id} written: public {} , secret {}", public.display(), secret.display())
            });
            Ok(())
        }
        Command::Schema { file: SchemaFile::BundleSpec } => {
            // A schema is a document, printed whole whatever `--output` says.
            airlock_term::print_json(&airlock_bundler::spec::json_schema());
            Ok(())
        }
        Command::Completions(c) => {
            c.print::<Cli>();
            Ok(())
        }
        Command::Man(m) => {
            for p in m.write::<Cli>()? {
                say!("wrote {}", p.display());
            }
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
    loop {
        let p = dialoguer::Password::new()
            .with_prompt("Passphrase for the new key")
            .with_confirmation("Repeat the passphrase", "the passphrases differ")
            .allow_empty_password(true)
            .interact()
            .map_err(|e| Error::input("passphrase", e.to_string()))?;
        if !p.is_empty() {
            return Ok(p);
        }
        // Said, not silently asked again: an empty one would leave the key unprotected.
        eprintln!("an empty passphrase would leave the key unprotected: type one, or use -W for an unencrypted key");
    }
}

/// Parses `4G`, `650M`, `512K`, `1GiB`, or plain bytes.
fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len()));
    let not_a_size = || format!("`{s}` is not a size (e.g. 4G, 1.5G, 650M, 1048576)");
    // Whole and fractional parts apart, so 1.5G is exact (no float rounding).
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if whole.is_empty() && frac.is_empty() || frac.contains('.') || frac.len() > 9 {
        return Err(not_a_size());
    }
    let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| not_a_size())? };
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(format!("`{s}`: unknown unit (use K, M, G or T)")),
    };
    let too_large = || format!("`{s}` is too large");
    let mut v = whole.checked_mul(mult).ok_or_else(too_large)?;
    if !frac.is_empty() {
        let digits: u64 = frac.parse().map_err(|_| not_a_size())?;
        let scale = 10u64.pow(frac.len() as u32);
        let part = (digits as u128 * mult as u128 / scale as u128) as u64;
        v = v.checked_add(part).ok_or_else(too_large)?;
    }
    if v == 0 {
        return Err("the split size must be greater than zero".into());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn the_command_line_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn sizes_parse_with_binary_units_and_reject_nonsense() {
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("650M"), Ok(650 << 20));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("0.5M"), Ok(1 << 19));
        assert_eq!(parse_size(".25K"), Ok(256));
        assert!(parse_size("1.2.3G").is_err());
        assert!(parse_size(".G").is_err());
        assert!(parse_size("0.0G").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("4X").is_err());
        assert!(parse_size("").is_err());
    }
}
