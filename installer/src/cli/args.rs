//! The command line: every command and flag of `airlock`, as clap parses them. What a
//! command does is the library's (`airlock_installer::ops`); `main.rs` connects the two.

use std::path::PathBuf;

use airlock_term::docs::{CompletionsArgs, ManArgs};
use airlock_term::GlobalArgs;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "airlock", version, about = "Verify Airlock bundles and install the platform they carry")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PreflightMode {
    Install,
    Join,
    Upgrade,
}

/// Trust, answers and target: what `install`, `join` and `upgrade` share.
#[derive(Args)]
pub struct SiteFlags {
    /// Vendor public key(s) to trust (default: the site keys in <root>/etc/airlock/keys).
    #[arg(long)]
    pub pubkey: Vec<PathBuf>,
    /// The site's answers file (docs/answers.md); without it `install` and `join` take
    /// the answers the site kept in /var/lib/airlock (with --check, --dry-run or no
    /// terminal) or ask, pre-filled from them; `upgrade` uses the kept answers.
    #[arg(long)]
    pub answers: Option<PathBuf>,
    /// Work on this target root instead of the running system: files are laid out and
    /// units enabled by symlink; nothing is started.
    #[arg(long, default_value = "/", value_parser = target_root)]
    pub root: PathBuf,
}

/// What `install` and `join` share.
#[derive(Args)]
pub struct InstallFlags {
    #[command(flatten)]
    pub site: SiteFlags,
    /// Accept the plan without asking.
    #[arg(long)]
    pub yes: bool,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Exit 7 when anything is pending (changes nothing).
    #[arg(long)]
    pub check: bool,
    /// Accept a failing preflight check, named by id (repeatable); journaled. With
    /// `nodes:`, NODE:CHECK accepts it on that node only.
    #[arg(long = "override", value_name = "CHECK")]
    pub overrides: Vec<String>,
    /// Live mode: seconds to wait for the node and every chart before giving up.
    #[arg(long, default_value_t = 1200)]
    pub timeout: u64,
    /// Write the wizard's answers to FILE for the next run or node (secrets left out;
    /// its comments say where the site keeps them).
    #[arg(long, value_name = "FILE")]
    pub save_answers: Option<PathBuf>,
}

/// How `install` reaches the other nodes of `nodes:` (docs/cluster.md).
#[derive(Args, Default)]
pub struct ClusterFlags {
    /// With `nodes:` in the answers: accept the host key of a node never connected to
    /// before (ssh's accept-new; a changed key is still refused). Journaled per node.
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// With `nodes:` in the answers: the ssh config file to use instead of ~/.ssh/config.
    #[arg(long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Verify a bundle completely: signature, every entry, the checksum sidecar.
    Verify {
        /// The bundle file (or any of its .partNNN files).
        bundle: PathBuf,
        /// Vendor public key(s) to trust (default: the site keys in /etc/airlock/keys).
        #[arg(long)]
        pubkey: Vec<PathBuf>,
        /// Also hash every bundle file against the signed .sha256 list.
        #[arg(long)]
        check_parts: bool,
    },
    /// Show what a bundle holds (works without a key: then it says "unverified").
    Inspect {
        /// The bundle file (or any of its .partNNN files).
        bundle: PathBuf,
        /// Vendor public key(s) to trust (default: the site keys in /etc/airlock/keys).
        #[arg(long)]
        pubkey: Vec<PathBuf>,
        /// Print the bundle's CycloneDX SBOM (JSON) instead of the summary.
        #[arg(long)]
        sbom: bool,
    },
    /// Install the platform from a bundle: verify and stage it, plan, then apply.
    Install {
        /// The bundle file (or any of its .partNNN files).
        bundle: PathBuf,
        #[command(flatten)]
        flags: InstallFlags,
        #[command(flatten)]
        cluster: ClusterFlags,
    },
    /// Join this node to a cluster another node started: a further HA server or an
    /// agent, from the same bundle and the join token file the first server wrote.
    /// Everything else is as `install` (the answers' `join` section, or these flags).
    Join {
        /// The bundle file (or any of its .partNNN files).
        bundle: PathBuf,
        /// The first server's address (overrides `join.server`).
        #[arg(long)]
        server: Option<String>,
        /// The join token file copied from the node that started the cluster, which keeps
        /// it at /var/lib/airlock/secrets/cluster-token (overrides `join.token_file`;
        /// default: that same path on this node).
        #[arg(long)]
        token_file: Option<PathBuf>,
        #[command(flatten)]
        flags: InstallFlags,
    },
    /// Upgrade the installed release from a newer bundle: verify, policy, preflight,
    /// the diff, a backup first, then images, distribution, charts and a health gate;
    /// on failure the whole previous release is put back (docs/day2.md, upgrade).
    Upgrade {
        /// The bundle file (or any of its .partNNN files).
        bundle: PathBuf,
        #[command(flatten)]
        flags: UpgradeFlags,
        #[command(flatten)]
        cluster: ClusterFlags,
    },
    /// Remove what `airlock install` laid down (its recorded inventory) and nothing
    /// else; files of ours changed since are kept unless --force.
    Uninstall {
        /// The target root the install was made into (`/`: this system).
        #[arg(long, default_value = "/", value_parser = target_root)]
        root: PathBuf,
        /// Also remove what the distribution created while running (its datastore,
        /// kubeconfig, kubelet state): the cluster's data is gone for good.
        #[arg(long)]
        purge: bool,
        /// Also remove files of ours that were changed since the install.
        #[arg(long)]
        force: bool,
        /// Remove without asking.
        #[arg(long)]
        yes: bool,
        /// Print what would be removed and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// On the first server of a site with `nodes:`: uninstall every other node over
        /// ssh too (agents, then servers last joined first), this node last.
        #[arg(long, conflicts_with = "dry_run")]
        all_nodes: bool,
        #[command(flatten)]
        cluster: ClusterFlags,
    },
    /// Check whether this host can take the platform: pass / warn / fail with a fix for
    /// each (exit 8 when a check fails). Verifies the bundle for its profile's limits.
    Preflight {
        /// The bundle file (or any of its .partNNN files).
        bundle: PathBuf,
        /// Vendor public key(s) to trust (default: the site keys in /etc/airlock/keys).
        #[arg(long)]
        pubkey: Vec<PathBuf>,
        /// The site's answers (profile, role, data directory, join, overrides); default: the site's kept answers.
        #[arg(long, conflicts_with = "profile")]
        answers: Option<PathBuf>,
        /// Without answers (and none kept): the bundle profile to check against (as a first server).
        #[arg(long)]
        profile: Option<String>,
        /// What the run is for; default: install, or join when the answers join.
        #[arg(long, value_enum)]
        mode: Option<PreflightMode>,
        /// Check a target root instead of the running system.
        #[arg(long, default_value = "/", value_parser = target_root)]
        root: PathBuf,
        /// Accept a failing check by id (repeatable).
        #[arg(long = "override", value_name = "CHECK")]
        overrides: Vec<String>,
    },
    /// The site PKI on a target: certificate status, and renewal of self-signed leaves.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// The site's container registry: push a verified bundle's images into it, or serve
    /// them from the bundle where there is none.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// The site's LDAP/Active Directory settings (the `ldap:` answers).
    Ldap {
        #[command(subcommand)]
        command: LdapCommand,
    },
    /// What is installed here and whether it is as installed: release, components,
    /// certificate expiry, last run, drift; on the running system also node and chart
    /// health. Exit 11 when anything needs attention (interrupted, drift, expired...).
    Status {
        /// The target root to report on (`/`: this system, with node and chart health).
        #[arg(long, default_value = "/", value_parser = target_root)]
        root: PathBuf,
    },
    /// The site's readiness report for the handover: the on-prem readiness checklist,
    /// each line with the evidence Airlock keeps for it ("not verified" where it has
    /// none), the platform's URLs, CA, credential files (never their values), drift and
    /// every upgrade; as text, JSON, or with -o a self-contained HTML page and the
    /// JSON signed with the site's report key (docs/report.md). Exit 11 when a line failed.
    Report {
        /// The target root to report on (`/`: this system, with node health).
        #[arg(long, default_value = "/", value_parser = target_root)]
        root: PathBuf,
        /// Write the HTML page to FILE and the signed JSON beside it (FILE.json and
        /// FILE.json.minisig, the .html replaced).
        #[arg(short = 'o', long = "output-file", value_name = "FILE", conflicts_with = "verify")]
        output_file: Option<PathBuf>,
        /// Check a signed report (FILE and FILE.minisig) instead of making one.
        #[arg(long, value_name = "FILE")]
        verify: Option<PathBuf>,
        /// With --verify: the site's public report key (default: the one under --root).
        #[arg(long, value_name = "FILE", requires = "verify")]
        pubkey: Option<PathBuf>,
    },
    /// Collect a support bundle (journal, state, preflight, configs, logs, cluster
    /// state) with every secret redacted; works on a broken site with what it reaches.
    SupportBundle {
        /// The archive to write (0600): .tar.gz, or .tar.zst for zstd.
        #[arg(short = 'o', long = "output-file")]
        output_file: PathBuf,
        /// The target root to collect from (`/`: this system, with cluster state and logs).
        #[arg(long, default_value = "/", value_parser = target_root)]
        root: PathBuf,
        /// On the first server of a site with `nodes:`: each other node's support bundle
        /// too, fetched over ssh into `nodes/<node>/` of the one archive.
        #[arg(long)]
        all_nodes: bool,
        #[command(flatten)]
        cluster: ClusterFlags,
    },
    /// Back up the site for disaster recovery into one archive encrypted to the site's
    /// recovery keys (`backup.recipients`), or check such an archive (docs/backup.md).
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Restore a backup onto an empty node (another name and address are fine): verify
    /// it, put back the PKI and secrets, install the release it names from the bundle
    /// with the given answers, then the datastore and databases; resumable (docs/backup.md).
    Restore {
        /// The backup file.
        #[arg(required_unless_present = "drill", conflicts_with = "drill")]
        file: Option<PathBuf>,
        /// The recovery key file whose public key the backup was encrypted to.
        #[arg(long, value_name = "KEYFILE")]
        identity: PathBuf,
        /// The bundle of the release the backup names (`airlock backup verify` shows it).
        #[arg(long, required_unless_present = "drill", conflicts_with = "drill")]
        bundle: Option<PathBuf>,
        /// Drill on the running site: verify the backup FILE, restore each database dump
        /// into a temporary database, run the consistency checks, drop the copies; changes
        /// nothing else and records the outcome for `airlock report`.
        #[arg(long, value_name = "FILE")]
        drill: Option<PathBuf>,
        /// With --drill: SQL run against the restored copy of the app's database that must
        /// return no row (repeatable).
        #[arg(long, value_name = "SQLFILE", requires = "drill")]
        check: Vec<PathBuf>,
        #[command(flatten)]
        site: SiteFlags,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Live mode: seconds to wait for the node and every chart before giving up.
        #[arg(long, default_value_t = 1200)]
        timeout: u64,
    },
    /// Verify while extracting into a new staging directory (removed on any failure).
    Extract {
        /// The bundle file (or any of its .partNNN files).
        bundle: PathBuf,
        /// Vendor public key(s) to trust (default: the site keys in /etc/airlock/keys).
        #[arg(long)]
        pubkey: Vec<PathBuf>,
        /// Staging directory to create.
        #[arg(short = 'd', long)]
        dir: PathBuf,
        /// Also write the image archive K3s/RKE2 import (.tar, or .tar.zst to compress).
        #[arg(long)]
        image_archive: Option<PathBuf>,
    },
    /// Print the JSON Schema of a file airlock reads (docs/schemas/), for editors.
    Schema {
        /// Which file: `answers` (the site's answers file).
        #[arg(value_enum)]
        file: SchemaFile,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Write the man pages of every command into DIR (packaging/install-docs.sh).
    #[command(hide = true)]
    Man(ManArgs),
}

/// The files `airlock schema` has a schema for.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum SchemaFile {
    /// The site's answers file (docs/answers.md).
    Answers,
}

#[derive(Subcommand)]
pub enum BackupCommand {
    /// Take a backup: the datastore, the app's and Keycloak's databases, the PKI with
    /// the CA key, the kept answers and generated secrets, the release record; written
    /// as FILE.partial and renamed when complete.
    Create {
        /// The archive to write (0600), or a directory to put it in (default: the site's
        /// /var/lib/airlock/backups).
        #[arg(short = 'o', long = "output-file", value_name = "FILE|DIR")]
        output_file: Option<PathBuf>,
        /// Then keep only the newest N backups in that directory.
        #[arg(long, value_name = "N")]
        keep: Option<usize>,
        /// The target root to back up (`/`: this system, with its datastore and databases).
        #[arg(long, default_value = "/", value_parser = target_root)]
        root: PathBuf,
    },
    /// Back up on a schedule: a systemd service and timer that run `backup create --keep`;
    /// `airlock status` then reports a missed or failed backup.
    Schedule {
        /// How often: 30m, 24h, 7d.
        #[arg(long, value_name = "INTERVAL")]
        every: String,
        /// How many backups to keep in the directory.
        #[arg(long, value_name = "N")]
        keep: usize,
        /// The directory on the node the backups go to (copy them off the node too).
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// The airlock the service runs.
        #[arg(long, default_value = "/usr/local/bin/airlock")]
        airlock: PathBuf,
        /// The target root to schedule on (`/`: this system).
        #[arg(long, default_value = "/", value_parser = target_root)]
        root: PathBuf,
    },
    /// Open a backup with a recovery key and check every part (digests, `pg_restore
    /// --list` of each database dump); say what a restore would bring back. Changes nothing.
    Verify {
        /// The backup file.
        file: PathBuf,
        /// The recovery key file (`age-keygen -o`) whose public key the backup was
        /// encrypted to.
        #[arg(long, value_name = "KEYFILE")]
        identity: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum PkiCommand {
    /// Every certificate in /etc/airlock/pki: subject, SANs, not-after, days left,
    /// SHA-256. Exits 10 when one has expired.
    Status {
        /// The target root the platform was installed into.
        #[arg(long, default_value = "/", value_parser = target_root)]
        root: PathBuf,
        /// Warn about certificates that expire within this many days.
        #[arg(long, value_name = "DAYS", default_value_t = 30)]
        within: i64,
    },
    /// Re-issue the leaf certificates that expire within DAYS with the site CA (new keys,
    /// same names). Self-signed PKI only: customer certificates come from the customer.
    Renew {
        /// The target root the platform was installed into.
        #[arg(long, default_value = "/", value_parser = target_root)]
        root: PathBuf,
        /// Re-issue leaves with this many days left or fewer.
        #[arg(long, value_name = "DAYS", default_value_t = 30)]
        within: i64,
        /// Say what would be renewed and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
pub enum RegistryCommand {
    /// Push every image of a bundle into a registry (Harbor, distribution, ...),
    /// verifying the bundle while it streams. Each image goes to
    /// REGISTRY/PREFIX/<its full reference>: docker.io/library/nginx:1.27 to
    /// PREFIX/docker.io/library/nginx:1.27 (docs/registry.md). Blobs the registry has
    /// are not sent again; a broken push continues where it stopped.
    Push(PushArgs),
    /// Serve a verified bundle's images read-only over the OCI Distribution API, for a
    /// site without a registry: each image under its full reference, as `registry push
    /// --to HOST` would put it (docs/registry.md). Runs until stopped.
    Serve(ServeArgs),
}

/// The flags of `registry serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// The bundle file (or any of its .partNNN files).
    pub bundle: PathBuf,
    /// Address and port to listen on.
    #[arg(long, default_value = "127.0.0.1:5000", value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,
    /// Vendor public key(s) to trust (default: the site keys in /etc/airlock/keys).
    #[arg(long)]
    pub pubkey: Vec<PathBuf>,
    /// The server certificate (PEM, leaf first), e.g. one the site PKI issued.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP (a lab only; clients then need their plain-HTTP switch).
    #[arg(long, conflicts_with = "tls_cert")]
    pub plain_http: bool,
}

/// The flags of `registry push`.
#[derive(Args)]
pub struct PushArgs {
    /// The bundle file (or any of its .partNNN files).
    pub bundle: PathBuf,
    /// The registry and an optional repository prefix: HOST[:PORT][/PREFIX].
    #[arg(long, value_name = "REGISTRY[/PREFIX]")]
    pub to: String,
    /// Vendor public key(s) to trust (default: the site keys in /etc/airlock/keys).
    #[arg(long)]
    pub pubkey: Vec<PathBuf>,
    /// PEM file with the CA that signs the registry's certificate (the site CA).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Talk plain HTTP to the registry (a lab registry without TLS only).
    #[arg(long)]
    pub plain_http: bool,
    /// docker config.json with the registry login (default: $DOCKER_CONFIG/config.json
    /// or ~/.docker/config.json). AIRLOCK_REGISTRY_USERNAME and
    /// AIRLOCK_REGISTRY_PASSWORD win over it.
    #[arg(long, value_name = "FILE")]
    pub auth_file: Option<PathBuf>,
    /// Say what the registry has and what would be sent; send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Blob uploads running at once.
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
    /// Attempts after the first for a request or an upload chunk.
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// Bytes per upload request (K, M, G suffixes); a broken upload resumes from the
    /// last whole chunk the registry holds.
    #[arg(long, default_value = "32M", value_parser = parse_size)]
    pub chunk_size: u64,
    /// Bytes per second per upload (K, M, G suffixes), for a thin link.
    #[arg(long, value_parser = parse_size)]
    pub limit_rate: Option<u64>,
}

/// `64M`, `1G`, `512K` or plain bytes.
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.eq_ignore_ascii_case(&'k') => (&s[..i], 1u64 << 10),
        Some((i, c)) if c.eq_ignore_ascii_case(&'m') => (&s[..i], 1 << 20),
        Some((i, c)) if c.eq_ignore_ascii_case(&'g') => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    match num.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n * mult),
        _ => Err(format!("`{s}` is not a size; write e.g. 32M, 512K or 1048576")),
    }
}

#[derive(Subcommand)]
pub enum LdapCommand {
    /// Test the answers' `ldap:` settings against the live directory: DNS, TCP, TLS,
    /// bind, and the user and group searches Keycloak will run. Exit 9 when it fails.
    Test {
        /// Answers file with an `ldap:` section (docs/answers.md).
        #[arg(long)]
        answers: PathBuf,
        /// The site: when an install is recorded there, the result is kept for
        /// `airlock report` (/var/lib/airlock/ldap-test.json, no secret in it).
        #[arg(long, default_value = "/", value_parser = target_root)]
        root: PathBuf,
    },
}

/// The flags of `upgrade`.
#[derive(Args)]
pub struct UpgradeFlags {
    #[command(flatten)]
    pub site: SiteFlags,
    /// Print the plan and the diff and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Accept the plan without asking.
    #[arg(long)]
    pub yes: bool,
    /// Live: seconds the health gate waits for the node, every chart and the endpoints.
    #[arg(long, default_value_t = 1200)]
    pub timeout: u64,
    /// Releases to keep in /var/lib/airlock/releases (never the current or previous).
    #[arg(long, default_value_t = airlock_installer::ops::upgrade::DEFAULT_KEEP)]
    pub keep: usize,
    /// On rollback, also put the datastore back from the backup (cluster changes
    /// made since the backup are lost); without it the command is printed.
    #[arg(long)]
    pub restore_datastore: bool,
    /// Undo the interrupted or failed upgrade instead of continuing it; with none
    /// pending, undo the last one while its release is current and the one before kept.
    #[arg(long)]
    pub rollback: bool,
    /// Upgrade even though the policy refuses it (a downgrade, a skipped required
    /// release, another HA server not Ready); journaled and reported.
    #[arg(long)]
    pub allow_policy_override: bool,
    /// Accept a failing preflight check, named by id (repeatable); journaled. With
    /// `nodes:`, NODE:CHECK accepts it on that node only.
    #[arg(long = "override", value_name = "CHECK")]
    pub overrides: Vec<String>,
}

/// `--root` as given, made absolute against the working directory: `--root s1` is
/// what an operator types, and every message then names the directory unambiguously.
fn target_root(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("an empty path; give the target root directory".into());
    }
    std::path::absolute(s).map_err(|e| format!("cannot make `{s}` absolute: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
