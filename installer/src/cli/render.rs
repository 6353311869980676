//! How reports read on a terminal: every `print_*` renders one library report as text
//! (JSON is the report itself, through [`print_json`]). Nothing here decides anything.

use std::path::Path;

use airlock_installer::host::shown_path as on_site;

use airlock_installer::bundle::inspect;
use airlock_installer::bundle::verify::{Status, VerifyReport};
use airlock_installer::ops::upgrade::UpgradeOutcome;

use airlock_term::{count, say, Output};

pub use airlock_term::print_json;

/// What the wizard was told, as the answers file it amounts to, secrets masked: the
/// operator reads it over before the plan is applied.
pub fn print_wizard_answers(a: &airlock_installer::site::answers::Answered) {
    say!("your answers (secrets masked):");
    for line in a.to_yaml().lines() {
        say!("  {line}");
    }
}

/// Every check short of a pass with its fix, then a one-line summary.
pub fn print_preflight(r: &airlock_installer::site::preflight::PreflightReport) {
    use airlock_installer::site::preflight::Status as S;
    for c in &r.checks {
        let word = match c.status {
            S::Pass | S::Skipped => continue,
            S::Warn => "warn",
            S::Fail => "FAIL",
            S::Overridden => "overridden",
        };
        say!("  {word:10} {}: {}", c.id, c.detail);
        if let Some(h) = &c.hint {
            say!("  {:10} hint: {h}", "");
        }
        if let Some(n) = &c.note {
            say!("  {:10} note: {n}", "");
        }
    }
    say!(
        "preflight ({:?}, {}{}): {} passed, {} warnings, {} failed, {} overridden, {} skipped",
        r.mode,
        r.distribution,
        r.profile.as_deref().map(|p| format!(", profile {p}")).unwrap_or_default(),
        r.passed().count(),
        r.warnings().count(),
        r.failed().count(),
        r.overridden().count(),
        r.skipped().count()
    );
}

pub fn print_verify(r: &VerifyReport) {
    let title = match (&r.name, &r.version) {
        (Some(n), Some(v)) => format!("{n} {v}"),
        _ => r.bundle.clone(),
    };
    if let Some(s) = &r.signer {
        say!("signature: good, key {s}");
    }
    if let Some(d) = &r.delta {
        print_delta(d);
    }
    for a in &r.artifacts {
        let mark = match a.status {
            Status::Ok => "ok         ",
            Status::Corrupt => "CORRUPT    ",
            Status::Unsafe => "UNSAFE     ",
            Status::NotChecked => "not checked",
            Status::FromBase => "from base  ",
        };
        say!("  {mark} {} {}", a.kind, a.name);
        if let Some(c) = &a.cosign {
            say!("              {c}");
        }
        for p in &a.problems {
            say!("              {p}");
        }
    }
    say!("checksum list: {}", r.checksums);
    for p in &r.parts {
        say!("  {:11} {} ({} bytes)", p.status, p.path, p.size);
    }
    if r.checksums == "signed" && r.parts.iter().any(|p| p.status == "not-checked") {
        say!(
            "  (parts marked not-checked were verified as one stream; --check-parts hashes each against the list too)"
        );
    }
    for e in &r.errors {
        eprintln!("error: {}: {}", e.subject, e.cause);
        if let Some(h) = &e.hint {
            eprintln!("  hint: {h}");
        }
    }
    if r.ok && r.delta.is_some() {
        say!("{title}: verified, every entry this delta carries matches the signed manifest");
    } else if r.ok {
        say!("{title}: verified, every artifact matches the signed manifest");
    } else {
        say!("{title}: FAILED (exit {})", r.exit_code);
    }
}

/// The delta line of `verify` and `inspect`.
pub fn print_delta(d: &airlock_installer::bundle::verify::DeltaReport) {
    say!(
        "delta over {} {} (manifest sha256 {}): {} entries ({} bytes) expected from the base, not checked here",
        d.base_name,
        d.base_version,
        d.base_manifest_sha256,
        d.entries_from_base,
        d.bytes_from_base
    );
}

pub fn print_push(r: &airlock_installer::ops::push::PushReport) {
    use airlock_installer::ops::push::{BlobAction, ImageState};
    let verb = if r.dry_run { "would push" } else { "pushed" };
    for i in &r.images {
        let state = match i.state {
            ImageState::Present => "present   ",
            ImageState::Pushed => "pushed    ",
            ImageState::WouldPush => "would push",
        };
        say!("{state}  {}  ->  {}", i.source, i.target);
    }
    if r.dry_run {
        for b in &r.blobs {
            let action = match b.action {
                BlobAction::Present => "present   ",
                BlobAction::Mounted => "would mount",
                BlobAction::Uploaded => "would send",
            };
            say!("  {action}  {}  {}  {} bytes", b.repository, b.digest, b.size);
        }
    }
    let resumed: u64 = r.blobs.iter().map(|b| b.resumed_from).sum();
    let count = |cosign: bool| {
        let of: Vec<_> = r.images.iter().filter(|i| i.cosign == cosign).collect();
        (of.iter().filter(|i| i.state != ImageState::Present).count(), of.len())
    };
    let ((images, all), (signatures, carried)) = (count(false), count(true));
    let cosign = if carried > 0 {
        format!(" and {signatures} of {carried} cosign signature or attestation manifests")
    } else {
        String::new()
    };
    say!(
        "{images} of {all} images{cosign} {verb} to {}; blobs: {} present, {} mounted, {} {}; {} bytes {}{}",
        r.registry,
        r.count(BlobAction::Present),
        r.count(BlobAction::Mounted),
        r.count(BlobAction::Uploaded),
        if r.dry_run { "to send" } else { "uploaded" },
        r.bytes_sent,
        if r.dry_run { "would be sent" } else { "sent" },
        if resumed > 0 {
            format!(" ({resumed} bytes were already there from an interrupted push)")
        } else {
            String::new()
        },
    );
}

pub fn print_inspect(r: &inspect::InspectReport) {
    say!("bundle      {} {}", r.name, r.version);
    say!("created     {}", r.created);
    if let Some(d) = &r.delta {
        print_delta(d);
    }
    say!("signed by   key {} ({})", r.signer_key_id, r.signature);
    if r.signature != "verified" {
        say!("            content not verified: run `airlock verify --pubkey VENDOR.pub` for that");
    }
    if let Some(d) = &r.distribution {
        say!("distribution {} {} ({})", d.kind, d.version, d.arch);
        for a in &d.artifacts {
            say!("  {:40} {:>12}  sha256:{}", a.name, a.size, a.sha256);
        }
    }
    say!("images ({})", r.images.len());
    for i in &r.images {
        say!("  {} [{}]", i.reference, i.component);
        say!("      {}  {}  {} bytes", i.digest, i.platforms.join(","), i.size);
    }
    say!("charts ({})", r.charts.len());
    for c in &r.charts {
        say!("  {} {} [{}]  {}  {} bytes", c.name, c.version, c.component, c.digest, c.size);
    }
    say!("files ({})", r.files.len());
    for f in &r.files {
        say!("  {:40} {:>12}  sha256:{}", f.name, f.size, f.sha256);
    }
    if !r.profiles.is_empty() {
        say!("profiles    {}", r.profiles.join(", "));
    }
    for k in &r.key_statements {
        say!("key statement {} ({})", k.label(), k.path);
    }
    if let Some(v) = &r.installer_version {
        say!("installer   airlock {v}");
    }
    say!(
        "size        {} bytes in {} entries, {} bytes compressed in {} file(s)",
        r.total_size,
        r.entries,
        r.compressed_size,
        r.parts
    );
}

pub fn print_upgrade(root: &Path, r: &airlock_installer::ops::upgrade::UpgradeReport, output: Output) {
    if output == Output::Json {
        print_json(r);
        return;
    }
    if let Some(p) = &r.preflight {
        print_preflight(p);
    }
    if let Some(airlock_installer::ops::upgrade::policy::Decision::Overridden { violations }) = &r.policy {
        for v in violations {
            say!("POLICY OVERRIDDEN (--allow-policy-override, journaled): {v}");
        }
    }
    if let Some(d) = &r.diff {
        say!("upgrade {} -> {}", d.from_version, d.to_version);
        if let Some((a, b)) = &d.distribution {
            say!("  distribution  {a} -> {b}");
        }
        for c in &d.charts {
            let v = |x: &Option<String>| x.clone().unwrap_or_else(|| "-".into());
            say!("  chart         {} {} -> {}", c.name, v(&c.from), v(&c.to));
        }
        for i in &d.images_added {
            say!("  image    +    {i}");
        }
        for i in &d.images_removed {
            say!("  image    -    {i}");
        }
        for p in &d.files_added {
            say!("  file     +    {}", p.display());
        }
        for p in &d.files_changed {
            say!("  file     ~    {}", p.display());
        }
        for p in &d.files_removed {
            say!("  file     -    {}", p.display());
        }
    }
    match r.outcome {
        UpgradeOutcome::AlreadyInstalled => say!("release {} is already installed; nothing to do", r.to),
        UpgradeOutcome::DryRun => say!("dry run: nothing was changed"),
        UpgradeOutcome::WouldRollBack => say!(
            "the unfinished upgrade {} -> {} is rolled back on the next run (release {} is put back); dry run: \
             nothing was changed",
            r.to,
            r.from,
            r.to
        ),
        UpgradeOutcome::RolledBack => say!("rolled back: release {} is current again (was {})", r.to, r.from),
        UpgradeOutcome::Upgraded => {
            say!("upgraded {} -> {}{}", r.from, r.to, if r.resumed { " (resumed)" } else { "" })
        }
    }
    if let Some(b) = &r.backup {
        say!(
            "backup: {} ({}, datastore: {})",
            on_site(root, &b.dir).display(),
            count(b.files.len(), "file", "files"),
            b.datastore
        );
    }
    if !r.pruned.is_empty() {
        say!("pruned releases: {}", r.pruned.join(", "));
    }
    if let Some(c) = &r.restore_datastore_command {
        say!("the datastore was not restored; to restore it: {c}");
    }
}

/// The platform part of the final report: where things are, never a credential's value.
/// A line of the install report (written for the site, with target paths) as shown
/// here: Airlock's own site paths in it get the target root in front under `--root`.
fn site_line(root: &Path, line: &str) -> String {
    if root == Path::new("/") {
        return line.to_string();
    }
    let mut out = line.to_string();
    for dir in [airlock_installer::state::ETC_DIR, airlock_installer::state::STATE_DIR] {
        out = out.replace(&format!(" {dir}/"), &format!(" {}/", on_site(root, Path::new(dir)).display()));
    }
    out
}

pub fn print_install_report(root: &Path, r: &airlock_installer::render::platform::wiring::InstallReport) {
    if r.urls.is_empty() {
        return;
    }
    say!("platform:");
    for (name, url) in &r.urls {
        say!("  {name:<10} {url}");
    }
    say!("credentials (root only, mode 0600; never printed):");
    for c in &r.credentials {
        say!("  {:<32} {}", c.what, on_site(root, &c.path).display());
    }
    say!("hand to the customer:");
    for line in &r.hand_to_customer {
        say!("  - {}", site_line(root, line));
    }
    say!("this report: {}", on_site(root, Path::new(airlock_installer::state::REPORT_PATH)).display());
}

pub fn print_pki_status(root: &Path, r: &airlock_installer::site::pki::StatusReport) {
    let mode = r.mode.map(|m| m.to_string()).unwrap_or_else(|| "unknown: no pki.json".to_string());
    say!("site PKI under {} (mode {mode})", root.join("etc/airlock/pki").display());
    for c in &r.certificates {
        let state = if c.expired {
            "EXPIRED"
        } else if c.expiring {
            "expiring"
        } else {
            "ok"
        };
        say!("  {:9} {:8} {} days left, not after {}", c.name, state, c.days_left, c.not_after);
        say!("            subject {}", c.subject);
        if !c.sans.is_empty() {
            say!("            SANs    {}", c.sans.join(", "));
        }
        say!("            sha256  {}", c.sha256);
    }
}

pub fn state_word(s: &airlock_installer::engine::StepState) -> &'static str {
    use airlock_installer::engine::StepState;
    match s {
        StepState::Satisfied => "done",
        StepState::Pending { .. } => "pending",
        StepState::Blocked { .. } => "BLOCKED",
    }
}

/// `airlock install --dry-run/--check`: each step with its state, then the counts.
pub fn print_plan(report: &airlock_installer::engine::PlanReport) {
    for s in &report.steps {
        say!("  {:9} {}", state_word(&s.state), s.description);
    }
    say!(
        "{} steps: {} pending, {} blocked, {} done",
        report.steps.len(),
        report.pending,
        report.blocked,
        report.satisfied()
    );
}

/// What an applied install did, where the CA is and the platform's report.
pub fn print_installed(r: &airlock_installer::ops::install::Installed) {
    say!(
        "installed {} {} into {}: {} applied, {} already done; journal {}",
        r.bundle,
        r.version,
        r.root.display(),
        count(r.result.applied, "step", "steps"),
        r.result.satisfied,
        on_site(&r.root, &r.result.journal).display()
    );
    match (&r.live, &r.checks) {
        (Some(up), checked) => {
            say!(
                "node {} Ready after {} s; {} installed",
                r.node,
                up.node_ready_after_s,
                count(up.charts.len(), "chart", "charts")
            );
            for c in checked.iter().flatten() {
                say!("  ok {} ({}) after {} s, verified against the site CA", c.name, c.url, c.ok_after_s);
            }
        }
        (None, _) => say!("target root: nothing was started; {} starts when the system boots", r.unit),
    }
    if let Some(fp) = &r.ca_fingerprint {
        say!(
            "site CA for the clients to trust: {} (SHA-256 {fp})",
            on_site(&r.root, Path::new(airlock_installer::state::CA_CERT)).display()
        );
    }
    if let Some(report) = &r.report {
        print_install_report(&r.root, report);
    }
    if let Some(t) = &r.join_token {
        say!("join token (root only, mode 0600; admits nodes to the cluster): {}", t.path.display());
        say!("  to join another server or an agent, copy it there:  {}", t.copy_command);
        say!("  then, on that node:  {}", t.join_command);
        say!("  (it keeps the token at {} too; remove the copy then)", airlock_installer::state::CLUSTER_TOKEN_PATH);
    }
}

/// `airlock status` as text.
pub fn print_status(r: &airlock_installer::ops::status::StatusReport, unhealthy_code: u8) {
    use airlock_installer::ops::status::Live;
    match &r.release {
        Some(rel) => {
            say!("release     {} {} (profile {})", rel.bundle, rel.version, rel.profile);
            say!("bundle      manifest sha256:{}, signed by key {}", rel.manifest_sha256, rel.signer);
        }
        None => say!("release     none finished here yet"),
    }
    for n in &r.nodes {
        let phase = match n.phase {
            airlock_installer::ops::cluster::Phase::Joined => "joined",
            airlock_installer::ops::cluster::Phase::Prepared => "prepared, not joined yet",
        };
        say!("node        {} ({}, {}) {}: {phase}", n.name, n.role, n.address, n.version);
    }
    for c in &r.components {
        let ns = c.namespace.as_deref().map(|n| format!(" -> {n}")).unwrap_or_default();
        let health = c.health.as_deref().map(|h| format!("  [{h}]")).unwrap_or_default();
        say!("  {:12} {:24} {}{ns}{health}", c.kind, c.name, c.version);
    }
    for c in &r.certificates {
        say!("  cert {:>5} days  {}  {} (until {})", c.days_left, c.path.display(), c.subject, c.not_after);
    }
    if let Some(l) = &r.last_run {
        say!(
            "last run    {} {:?}, started {}{}; {} applied, {} already done, {} rolled back",
            l.run_id,
            l.outcome,
            l.started,
            l.finished.as_deref().map(|f| format!(", finished {f}")).unwrap_or_default(),
            l.steps_applied,
            l.steps_satisfied,
            l.steps_rolled_back
        );
        for o in l.overrides.iter().filter(|o| o.applied) {
            say!("  override  {}: {}", o.id, o.detail);
        }
    }
    if let Some(b) = &r.backup {
        use airlock_installer::ops::backup::schedule::human;
        let rpo = b.rpo_secs.map(|r| format!(", objective {}", human(r))).unwrap_or_default();
        match (&b.last, &b.last_ok, b.age_secs) {
            (Some(last), _, _) if !last.ok => {
                say!("backup      last run FAILED {}: {}{rpo}", last.finished, last.error.as_deref().unwrap_or(""))
            }
            (_, Some(ok), Some(age)) => say!("backup      last {} ({} ago){rpo}", ok.finished, human(age)),
            _ => say!("backup      none yet{rpo}"),
        }
    }
    match &r.live {
        Live::NotLive { reason } => say!("live        not live: {reason}"),
        Live::Checked { unit, unit_state, nodes, .. } => {
            say!("live        {unit} {unit_state}");
            for (n, s) in nodes {
                say!("  node {n} {s}");
            }
        }
    }
    for d in &r.drift {
        say!("  DRIFT     {} ({})", d.path.display(), d.problem);
    }
    if let Some(h) = &r.drift_hint {
        say!("  hint: {h}");
    }
    for w in &r.warnings {
        say!("  warning   {w}");
    }
    if let Some(p) = &r.pending {
        say!("  PENDING   {}", p.state);
        say!("  hint: {}", p.hint);
    }
    if r.healthy {
        say!("healthy");
    } else {
        say!("NEEDS ATTENTION (exit {unhealthy_code}):");
        for p in &r.problems {
            say!("  - {p}");
        }
    }
}

/// `airlock support-bundle` as text.
pub fn print_support(r: &airlock_installer::ops::support::SupportReport) {
    let m = &r.manifest;
    say!(
        "support bundle {} ({} bytes, mode 0600): {}",
        r.output.display(),
        r.archive_bytes,
        count(m.files.len(), "file", "files")
    );
    let total: usize = m.redactions.values().sum();
    say!("redacted {}:", count(total, "value", "values"));
    for (rule, n) in &m.redactions {
        say!("  {rule:24} {n}");
    }
    if !m.not_collected.is_empty() {
        say!("not collected ({}; MANIFEST.json says why):", m.not_collected.len());
        for n in &m.not_collected {
            say!("  {}: {}", n.source, n.reason);
        }
    }
}

/// `airlock backup create`: the archive, then each part and what was left out.
pub fn print_backup(r: &airlock_installer::ops::backup::CreateReport) {
    let m = &r.manifest;
    say!(
        "backup {} ({} bytes, mode 0600, encrypted to {}): {}",
        r.file.display(),
        r.size,
        count(r.recipients, "recovery key", "recovery keys"),
        count(m.parts.len(), "part", "parts")
    );
    // Bucket objects may be many: one line a bucket (the manifest lists each).
    for p in m.parts.iter().filter(|p| p.object.is_none()) {
        say!("  {:56} {:>12} bytes  {}", p.name, p.size, p.sha256.get(..19).unwrap_or(&p.sha256));
    }
    print_buckets(&m.buckets);
    print_backup_skipped(&m.skipped);
    for p in &r.pruned {
        say!("removed the older backup {}", p.display());
    }
}

/// `airlock backup schedule`: what runs when, and where the backups go.
pub fn print_backup_schedule(r: &airlock_installer::ops::backup::schedule::ScheduleReport) {
    let s = &r.schedule;
    say!(
        "backups every {} into {}, the newest {} kept",
        airlock_installer::ops::backup::schedule::human(s.every_secs),
        s.to.display(),
        s.keep
    );
    for u in &r.units {
        say!("  wrote {}", u.display());
    }
}

fn print_buckets(buckets: &[airlock_installer::ops::backup::buckets::BucketEntry]) {
    for b in buckets {
        say!(
            "  bucket {} from {}: {}, {} bytes",
            b.name,
            b.endpoint,
            count(b.objects as usize, "object", "objects"),
            b.bytes
        );
    }
}

fn print_backup_skipped(skipped: &[airlock_installer::ops::backup::Skipped]) {
    if !skipped.is_empty() {
        say!("not in the backup ({}):", skipped.len());
        for s in skipped {
            say!("  {}: {}", s.part, s.reason);
        }
    }
}

/// `airlock backup verify`: what a restore would bring back, and from when.
pub fn print_backup_verify(r: &airlock_installer::ops::backup::VerifyReport) {
    use airlock_installer::ops::backup::PartKind;
    let hours = r.age_secs / 3600;
    say!("{}: every part matches its manifest", r.file.display());
    say!("taken {} on node {} ({hours} h ago)", r.created, r.node);
    if let Some(rel) = &r.release {
        say!("release {} {} (bundle manifest sha256 {})", rel.bundle, rel.version, rel.manifest_sha256);
    }
    say!("a restore would bring back:");
    for p in r.parts.iter().filter(|p| p.kind.is_datastore()) {
        say!("  datastore ({}): {} ({} bytes)", r.distribution, p.name, p.size);
    }
    for p in r.parts_of(PartKind::Database) {
        say!(
            "  database {}: {} table(s), {} entries in its table of contents ({} bytes)",
            p.source,
            p.tables.unwrap_or(0),
            p.toc_entries.unwrap_or(0),
            p.size
        );
    }
    let n = |k| r.parts_of(k).count();
    say!(
        "  PKI: {}; answers: {}; generated secrets: {}; release record: {}",
        count(n(PartKind::Pki), "file", "files"),
        count(n(PartKind::Answers), "file", "files"),
        count(n(PartKind::Secret), "file", "files"),
        count(n(PartKind::Release), "file", "files")
    );
    print_buckets(&r.buckets);
    print_backup_skipped(&r.skipped);
}

/// `airlock restore`: the backup, then each step (done or to do) and what could not run.
pub fn print_restore(r: &airlock_installer::ops::backup::RestoreReport) {
    let b = &r.backup;
    say!("backup {} taken {} on node {}: every part matches its manifest", b.file.display(), b.created, b.node);
    for s in &r.steps {
        let mark = if s.done {
            "done"
        } else if r.dry_run {
            "to do"
        } else {
            "not done"
        };
        say!("  {:10} {:9} {}", s.step.id(), mark, s.what);
    }
    for n in &r.journal.notes {
        say!("note: {n}");
    }
    if r.dry_run {
        say!("dry run: nothing was changed");
    }
}

/// `airlock restore --drill`: each database copy, each check, the verdict.
pub fn print_drill(r: &airlock_installer::ops::backup::DrillRecord) {
    say!("restore drill of {} (taken {}) at {}", r.archive, r.backup_created, r.ran);
    for d in &r.databases {
        let rows: u64 = d.tables.iter().map(|t| t.1).sum();
        let state = if d.ok { "ok" } else { "FAILED" };
        say!(
            "  {:28} {state:6} {} table(s), {rows} row(s) in {} (dropped: {})",
            d.part,
            d.tables.len(),
            d.temporary,
            d.dropped
        );
    }
    for c in &r.checks {
        say!("  check {:22} {:6} {} row(s)", c.name, if c.ok { "ok" } else { "FAILED" }, c.rows);
    }
    // Verified with the backup; a drill does not write into the live MinIO.
    print_buckets(&r.buckets);
    for f in r.failures() {
        say!("failed: {f}");
    }
    say!("{}", if r.passed { "drill passed" } else { "drill FAILED" });
}

/// `airlock uninstall`'s plan, one action a line.
pub fn print_uninstall_plan(root: &Path, p: &airlock_installer::ops::uninstall::UninstallPlan) {
    use airlock_installer::ops::uninstall::Action;
    for a in &p.actions {
        let line = match a {
            Action::Stop { unit, .. } => format!("stop      {unit} and its containers"),
            Action::DisableUnit { unit } => format!("disable   {unit}"),
            Action::Remove { path, edited: None } => format!("remove    {}", path.display()),
            Action::Remove { path, edited: Some(reason) } => {
                format!("remove    {} ({}; removed because of --force)", path.display(), reason.describe())
            }
            Action::Keep { path, reason } => {
                format!("KEEP      {} ({}; --force removes it)", path.display(), reason.describe())
            }
            Action::RemoveDirIfEmpty { path } => format!("rmdir     {} (if empty)", path.display()),
            Action::RemoveTree { path } => format!("remove -r {}", path.display()),
        };
        say!("  {line}");
    }
    if let Some(t) = &p.token_copy {
        say!("  leave     {} (the copy of the join token this node joined with: not airlock's)", t.display());
    }
    for d in &p.state_data {
        say!(
            "  with {}: {} ({}), gone for good; copy {} elsewhere first to keep {}",
            airlock_installer::state::STATE_DIR,
            count(d.entries.len(), d.what, &format!("{}s", d.what)),
            d.entries.join(", "),
            on_site(root, &d.path).display(),
            if d.entries.len() == 1 { "it" } else { "them" }
        );
    }
}

/// What `airlock uninstall` did: the summary says whether the install is gone whole,
/// and every file and directory left is named with what keeps it.
pub fn print_uninstall_report(
    distribution: &str,
    unit: &str,
    root: &Path,
    r: &airlock_installer::ops::uninstall::UninstallReport,
) {
    use airlock_installer::ops::uninstall::Holds;
    let mut removed = vec![
        count(r.removed_files, "file or link", "files and links"),
        count(r.removed_dirs, "empty directory", "empty directories"),
    ];
    if r.removed_temp_files > 0 {
        removed.push(count(r.removed_temp_files, "leftover temporary file", "leftover temporary files"));
    }
    removed.extend(r.removed_trees.iter().map(|t| format!("the tree {}", t.display())));
    let what = format!("the {distribution} install ({unit}) from {}", root.display());
    if r.complete() {
        say!("removed {what}: {}", removed.join(", "));
    } else {
        let mut left = Vec::new();
        if !r.kept.is_empty() {
            left.push(count(r.kept.len(), "file of ours", "files of ours"));
        }
        if !r.runtime_left.is_empty() {
            left.push(format!("{distribution}'s runtime data"));
        }
        if !r.kept_dirs.is_empty() {
            left.push(count(r.kept_dirs.len(), "directory", "directories"));
        }
        say!("removed {what} except what is listed below: {}; left {}", removed.join(", "), left.join(", "));
    }
    // The install's record went with the rest, so `--force` has nothing left to act on:
    // the file is the operator's to keep or remove (it may hold a secret of the site).
    for k in &r.kept {
        say!(
            "  kept {} ({}; it may hold the site's secrets: remove it by hand if it is not wanted, rm {})",
            k.path.display(),
            k.reason.describe(),
            on_site(root, &k.path).display()
        );
    }
    if let Some(t) = &r.token_copy {
        say!(
            "  left {} (the copy of the join token this node joined with: not airlock's to remove, but it still \
             admits nodes to the cluster; rm {} once no other node needs it)",
            t.display(),
            on_site(root, t).display()
        );
    }
    for k in &r.removed_edited {
        say!("  removed {} although it was {} (--force)", k.path.display(), k.reason.describe());
    }
    for t in &r.runtime_left {
        say!("  kept {} ({distribution}'s runtime data; --purge removes it)", t.display());
    }
    for d in &r.kept_dirs {
        let holds: Vec<String> = d
            .holds
            .iter()
            .map(|h| match h {
                Holds::KeptFiles => "files of ours kept above".to_string(),
                Holds::RuntimeData => format!("{distribution}'s runtime data"),
                Holds::OthersFiles => "files that are not airlock's".to_string(),
            })
            .collect();
        say!("  kept {} (not empty: holds {})", d.path.display(), holds.join(" and "));
    }
}

/// `airlock pki renew` as text.
pub fn print_pki_renew(r: &airlock_installer::site::pki::RenewReport, within: i64, dry_run: bool) {
    let verb = if dry_run { "would renew" } else { "renewed" };
    for n in &r.renewed {
        match &n.new_not_after {
            Some(new) => say!("{verb} {} ({}): valid until {new} (was {})", n.name, n.reason, n.old_not_after),
            None => say!("{verb} {} ({}; valid until {})", n.name, n.reason, n.old_not_after),
        }
    }
    if !r.kept.is_empty() {
        say!("kept {} (more than {within} days left)", r.kept.join(", "));
    }
    let refreshed = if dry_run { "would refresh" } else { "refreshed" };
    for s in &r.secrets {
        say!("{refreshed} TLS Secret manifest {}", s.display());
    }
    if !dry_run && !r.secrets.is_empty() {
        say!("K3s and RKE2 apply changed manifests by themselves; the ingress then serves the new certificates");
    }
}

/// `airlock pki status`'s warnings and, when a certificate expired, the error (stderr).
pub fn print_pki_problems(r: &airlock_installer::site::pki::StatusReport) {
    for c in &r.certificates {
        if c.expiring {
            eprintln!("warning: {} expires in {} days ({}); run `airlock pki renew`", c.name, c.days_left, c.not_after);
        }
        if c.key_matches == Some(false) {
            eprintln!("warning: the key next to {} does not belong to it; run `airlock pki renew`", c.path.display());
        }
    }
    if r.expired > 0 {
        let names: Vec<&str> = r.certificates.iter().filter(|c| c.expired).map(|c| c.name.as_str()).collect();
        eprintln!("error: expired: {}", names.join(", "));
        eprintln!(
            "  hint: `airlock pki renew` re-issues self-signed leaves; customer certificates come from the customer's IT"
        );
    }
}

/// `airlock ldap test`'s verdict.
pub fn print_ldap(
    result: &Result<airlock_installer::site::ldap::ProbeReport, airlock_installer::site::ldap::ProbeError>,
    output: Output,
    fail_code: u8,
) {
    match output {
        Output::Json => {
            let v = match result {
                Ok(r) => serde_json::json!({"ok": true, "exit_code": 0, "report": r}),
                Err(e) => serde_json::json!({"ok": false, "exit_code": fail_code, "error": e}),
            };
            print_json(&v);
        }
        Output::Text => match result {
            Ok(r) => say!("{}\nLDAP settings work", r.summary()),
            Err(e) => eprintln!("error: LDAP check failed: {e}"),
        },
    }
}

pub fn print_readiness(
    r: &airlock_installer::ops::report::Readiness,
    written: Option<&airlock_installer::ops::report::Written>,
    root: &Path,
    failed_code: u8,
) {
    use airlock_installer::ops::report::{Verdict, REPORT_PUBKEY_PATH};
    match &r.release {
        Some(rel) => say!(
            "readiness of {} {} ({}), {} by {}",
            rel.bundle,
            rel.version,
            rel.distribution,
            r.generated,
            r.operator
        ),
        None => say!("readiness: no finished install here yet ({} by {})", r.generated, r.operator),
    }
    for l in &r.checklist {
        let mark = match l.status {
            Verdict::Verified => "verified    ",
            Verdict::NotVerified => "not verified",
            Verdict::Failed => "FAILED      ",
        };
        say!("  {mark}  {}", l.item);
    }
    if !r.next_steps.is_empty() {
        say!("next:");
        for s in &r.next_steps {
            say!("  - {s}");
        }
    }
    match written {
        Some(w) => {
            say!("page:      {}", w.html.display());
            say!("signed:    {} ({})", w.json.display(), w.signature.display());
            say!(
                "check it:  minisign -V -m {} -p {}",
                w.json.display(),
                on_site(root, Path::new(REPORT_PUBKEY_PATH)).display()
            );
        }
        None => say!("for the handover: airlock report -o report.html (the page, and the JSON signed beside it)"),
    }
    if r.has_failed() {
        say!("FAILED lines need attention (exit {failed_code})");
    }
}

/// A target path as the operator finds it (below `--root` when it is not `/`).
pub fn on_site_path(root: &Path, path: &str) -> String {
    on_site(root, Path::new(path)).display().to_string()
}

/// The cluster report: one line per node, and each failure's cause and hint.
pub fn print_cluster(r: &airlock_installer::ops::cluster::ClusterReport) {
    use airlock_installer::ops::cluster::NodeResult;
    say!("cluster {} ({} nodes):", r.version, r.nodes.len());
    for n in &r.nodes {
        let result = match &n.result {
            NodeResult::Local => "this node".to_string(),
            NodeResult::Prepared => "ready (bundle verified there, preflight passed)".to_string(),
            NodeResult::Joined => "joined".to_string(),
            NodeResult::Checked => "done by an earlier run, healthy (not redone)".to_string(),
            NodeResult::Upgraded => "upgraded".to_string(),
            NodeResult::Removed => "uninstalled".to_string(),
            NodeResult::RolledBack => "upgraded, then put back (another node failed)".to_string(),
            NodeResult::RollbackFailed { .. } => "upgraded; putting it back FAILED".to_string(),
            NodeResult::Skipped { why } => format!("skipped: {why}"),
            NodeResult::Failed { step, .. } => format!("FAILED at {step}"),
        };
        let mut sent = if n.bytes_sent > 0 { format!(", {} bytes sent", n.bytes_sent) } else { String::new() };
        if !n.overrides.is_empty() {
            sent.push_str(&format!(", overridden: {}", n.overrides.join(", ")));
        }
        say!("  {:<16} {:<6} {:<20} {:<10} {result}{sent}", n.name, n.role, n.address, n.version);
        if let NodeResult::Failed { cause, hint, .. } | NodeResult::RollbackFailed { cause, hint } = &n.result {
            say!("    {cause}");
            for l in hint.lines().filter(|l| !l.trim().is_empty()) {
                say!("    hint: {l}");
            }
        }
    }
    if r.accepted_new_host_keys {
        say!("new host keys were accepted (--accept-new-host-keys); the node journals say so");
    }
}
