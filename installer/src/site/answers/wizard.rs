//! The wizard's loop: asks the question list through a [`Prompter`], validating every
//! answer at its prompt and asking again until it passes.
//!
//! The loop is pure: the binary drives it with dialoguer prompts on a TTY, tests with
//! scripted input. When all questions are answered, the answers go through the same
//! reader as an answers file (and, given the bundle's profiles, the same profile
//! cross-checks); a problem found there re-asks the question that owns the key.

use airlock_format::error::Result;
use serde_yaml::Value;

use super::questions::{
    missing, read_document, table_value, Check, Column, ListCheck, Need, Question, Row, Shape, TableCheck,
};
use super::strict::Problem;
use super::{profile_named, Answered, Answers, Facts};

/// How wizard-made answers are named in errors.
pub const WIZARD: &str = "wizard answers";

/// The terminal side of the wizard.
pub trait Prompter {
    /// Asks one line and returns it as typed. An empty line takes `prompt.default`, or
    /// leaves an optional key out. For `secret` prompts, do not echo the input.
    fn answer(&mut self, prompt: &Prompt<'_>) -> Result<String>;
    /// Tells the operator why an answer was not taken; a prompt follows right away.
    fn rejected(&mut self, problem: &Problem);
    /// Tells the operator what a [`LiveCheck`] found (`3 users under ...`).
    fn note(&mut self, _text: &str) {}
}

/// A live test of a section's answers (`ldap`: connect, bind and search), run as soon
/// as the section's last question is answered. On failure the problem is shown and the
/// whole section is asked again, earlier answers offered as defaults (secrets not).
pub struct LiveCheck {
    /// The section it checks: `ldap` covers every `ldap.*` question.
    pub section: &'static str,
    /// `Ok(Some(note))`: passed, the note is shown; `Ok(None)`: nothing to check (the
    /// section was left out); `Err`: why not, at the key to fix.
    pub run: fn(&Answered) -> std::result::Result<Option<String>, Problem>,
    /// Where asking starts again after a failure.
    pub reask: Reask,
    /// A check of one answer of the section as soon as it is given (`pki.ca_key`: a
    /// readable, unencrypted key that belongs to `pki.ca_cert`), before the next
    /// question; a failure is shown and that question asked again. `run` still checks
    /// the section as a whole at its end.
    pub entry: Option<EntryCheck>,
    /// Whether the operator may skip the check after it failed, instead of answering
    /// the section again: a directory out of reach from where the wizard runs (away from
    /// the site network) is no reason to doubt the answers. The skip is recorded in the
    /// answers ([`Answered::skipped_checks`]) and the install tests again on site.
    pub skippable: bool,
}

/// The choice offered after a skippable [`LiveCheck`] failed: the first is the default.
pub const ASK_AGAIN: &str = "ask again";
/// See [`ASK_AGAIN`].
pub const SKIP_CHECK: &str = "skip the live check (it will be tested at install time on site)";

/// Checks the answer at a key (the first argument) given the answers so far.
pub type EntryCheck = fn(&str, &Answered) -> std::result::Result<(), Problem>;

/// Where the wizard starts asking again after a [`LiveCheck`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reask {
    /// The whole section: its answers depend on each other (an LDAP bind refused may
    /// be the DN, the password or the server).
    Section,
    /// The question the problem names, then the rest of the section: a bad file is
    /// that file (`pki.ca_key`), and the answers before it stand.
    FailedKey,
}

/// One prompt, with everything a front end needs to render it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompt<'a> {
    /// The answers key it fills: `node.ip`, `ha.servers[1].ip`.
    pub key: String,
    pub text: String,
    pub help: &'a str,
    /// Taken on an empty answer. Never set for secrets.
    pub default: Option<String>,
    /// When not empty, the answer must be one of these (render a selection).
    pub choices: Vec<String>,
    pub secret: bool,
    /// Several values, comma-separated.
    pub list: bool,
    /// An empty answer without a default is refused.
    pub required: bool,
}

/// Asks `questions` (normally [`super::questions()`]) and returns validated answers.
pub fn ask(questions: &[Question], facts: &Facts, prompter: &mut dyn Prompter) -> Result<Answers> {
    ask_with_document(questions, facts, prompter).map(|(answers, _)| answers)
}

/// [`ask`], also returning the answers as a document the binary can save as an answers
/// file for the next run or node ([`Answered::to_yaml`]).
pub fn ask_with_document(
    questions: &[Question],
    facts: &Facts,
    prompter: &mut dyn Prompter,
) -> Result<(Answers, Answered)> {
    ask_checked(questions, facts, prompter, &[])
}

/// [`ask_with_document`], running each [`LiveCheck`] when its section is answered.
pub fn ask_checked(
    questions: &[Question],
    facts: &Facts,
    prompter: &mut dyn Prompter,
    checks: &[LiveCheck],
) -> Result<(Answers, Answered)> {
    ask_prefilled(questions, facts, prompter, checks, None)
}

/// [`ask_checked`], every question pre-filled from `kept` (the site's kept answers, an
/// earlier install's): Enter keeps each kept answer. A kept secret is never shown; an
/// empty answer at its prompt keeps it (the prompt says so).
pub fn ask_prefilled(
    questions: &[Question],
    facts: &Facts,
    prompter: &mut dyn Prompter,
    checks: &[LiveCheck],
    kept: Option<&Answered>,
) -> Result<(Answers, Answered)> {
    let mut a = Answered::for_bundle(facts.bundle.clone());
    let in_section =
        |q: &Question, c: &LiveCheck| q.key.strip_prefix(c.section).is_some_and(|rest| rest.starts_with('.'));
    let mut i = 0;
    while i < questions.len() {
        let q = &questions[i];
        if (q.ask_if)(&a, facts) {
            ask_one(q, facts, &mut a, prompter, kept)?;
            if let Some(entry) = checks.iter().filter(|c| in_section(q, c)).find_map(|c| c.entry) {
                // An optional key left empty has nothing to check.
                while a.has(q.key) {
                    match entry(q.key, &a) {
                        Ok(()) => break,
                        Err(problem) => {
                            prompter.rejected(&problem);
                            ask_one(q, facts, &mut a, prompter, kept)?;
                        }
                    }
                }
            }
        } else if let Need::Default(default) = q.need {
            // What a file that leaves the key out gets.
            a.set(q.key, Value::String(default(&a)));
        }
        i += 1;
        let ends = |c: &&LiveCheck| in_section(q, c) && !questions.get(i).is_some_and(|next| in_section(next, c));
        if let Some(check) = checks.iter().find(ends) {
            match (check.run)(&a) {
                Ok(Some(note)) => prompter.note(&note),
                Ok(None) => {}
                Err(problem) => {
                    prompter.rejected(&problem);
                    if check.skippable && skip_chosen(check.section, prompter)? {
                        a.skip_check(check.section, &problem);
                        continue;
                    }
                    let start = questions.iter().position(|q| in_section(q, check)).unwrap_or(i);
                    let failed = || questions.iter().position(|q| in_section(q, check) && owns(q.key, &problem.key));
                    i = match check.reask {
                        Reask::Section => start,
                        Reask::FailedKey => failed().unwrap_or(start),
                    };
                }
            }
        }
    }
    loop {
        let problem = match finish(&a, facts) {
            Ok(answers) => return Ok((answers, a)),
            Err(p) => p,
        };
        prompter.rejected(&problem);
        let Some(q) = questions.iter().find(|q| owns(q.key, &problem.key)) else {
            return Err(problem.into_error(WIZARD));
        };
        ask_one(q, facts, &mut a, prompter, kept)?;
    }
}

/// Asks whether to skip the failed live check of `section` (key `<section>.live_check`).
fn skip_chosen(section: &str, prompter: &mut dyn Prompter) -> Result<bool> {
    let prompt = Prompt {
        key: format!("{section}.live_check"),
        text: format!("The {section} live check failed: ask again, or skip it"),
        help: "skip it when this machine cannot reach the site's network now; the install tests it again on site",
        default: Some(ASK_AGAIN.to_string()),
        choices: vec![ASK_AGAIN.to_string(), SKIP_CHECK.to_string()],
        secret: false,
        list: false,
        required: true,
    };
    let typed = prompter.answer(&prompt)?;
    Ok(typed.trim() == SKIP_CHECK || typed.trim() == "skip")
}

/// The file reader and the profile cross-checks, on the wizard's document.
fn finish(a: &Answered, facts: &Facts) -> std::result::Result<Answers, Problem> {
    let doc = read_document(&a.to_value(), a.bundle())?;
    let mut answers = Answers::from_answered(&doc, WIZARD)?;
    answers.skipped_checks = a.skipped_checks().to_vec();
    if !facts.profiles.is_empty() {
        answers.problems_against(profile_named(&answers.profile, &facts.profiles)?)?;
    }
    Ok(answers)
}

/// Whether the question at `key` is the one to re-ask for a problem at `problem`.
fn owns(key: &str, problem: &str) -> bool {
    let below = |outer: &str, inner: &str| {
        inner.strip_prefix(outer).is_some_and(|rest| rest.starts_with('[') || rest.starts_with('.'))
    };
    key == problem || below(key, problem) || below(problem, key)
}

fn ask_one(q: &Question, facts: &Facts, a: &mut Answered, p: &mut dyn Prompter, kept: Option<&Answered>) -> Result<()> {
    // The previous answer (when re-asking) is offered again, but is no context for itself;
    // the first time, the site's kept answer is.
    let kept_value = kept.and_then(|k| k.get(q.key)).cloned();
    let previous = a.get(q.key).cloned().or_else(|| kept_value.clone());
    a.remove(q.key);
    let default = |a: &Answered| match q.need {
        Need::Default(d) => Some(d(a)),
        _ => (q.suggest)(a, facts),
    };
    match &q.shape {
        Shape::Text(check) => {
            let d = previous.as_ref().and_then(Value::as_str).map(str::to_string).or_else(|| default(a));
            scalar(q, a, p, *check, d, Vec::new(), false)
        }
        // A secret is never offered back; a kept one is kept on Enter, unseen.
        Shape::Secret(check) => {
            let keep = kept_value.as_ref().and_then(Value::as_str).map(str::to_string);
            secret(q, a, p, *check, keep)
        }
        Shape::Choice { options, check } => {
            let d = previous.as_ref().and_then(Value::as_str).map(str::to_string).or_else(|| default(a));
            scalar(q, a, p, *check, d, options(facts), false)
        }
        Shape::List { item, all } => {
            let prev: Option<Vec<String>> = previous
                .as_ref()
                .and_then(Value::as_sequence)
                .map(|s| s.iter().filter_map(Value::as_str).map(str::to_string).collect());
            let d = prev.map(|v| v.join(", ")).or_else(|| default(a));
            list(q, a, p, *item, *all, d)
        }
        Shape::Table { columns, all } => {
            let names: Vec<&str> = columns.iter().map(|c| c.key).collect();
            let kept_rows = kept.map(|k| k.rows(q.key, &names)).unwrap_or_default();
            table(q, facts, a, p, columns, *all, &kept_rows)
        }
    }
}

/// A secret's prompt. With a kept value (`keep`), an empty answer keeps it: the prompt
/// is then not required and says so, and the value is checked as if typed.
fn secret(q: &Question, a: &mut Answered, p: &mut dyn Prompter, check: Check, keep: Option<String>) -> Result<()> {
    let Some(kept) = keep else { return scalar(q, a, p, check, None, Vec::new(), true) };
    loop {
        let prompt = Prompt {
            key: q.key.to_string(),
            text: format!("{} (empty: keep the site's kept one)", prompt_text(q.prompt, true)),
            help: q.help,
            default: None,
            choices: Vec::new(),
            secret: true,
            list: false,
            required: false,
        };
        let raw = p.answer(&prompt)?;
        let typed = raw.trim_end_matches(['\r', '\n']);
        let value = if typed.is_empty() { kept.clone() } else { typed.to_string() };
        match check(&value, a) {
            Ok(()) => {
                a.set(q.key, Value::String(value));
                return Ok(());
            }
            Err(e) => p.rejected(&e.problem(q.key)),
        }
    }
}

/// A prompt's text as offered now: a required answer cannot be left empty, so what an
/// empty answer would mean (`(empty: no directory)`) is not offered then.
fn prompt_text(text: &str, required: bool) -> String {
    match text.find(" (empty:") {
        Some(i) if required && text.ends_with(')') => text[..i].to_string(),
        _ => text.to_string(),
    }
}

fn scalar(
    q: &Question,
    a: &mut Answered,
    p: &mut dyn Prompter,
    check: Check,
    default: Option<String>,
    choices: Vec<String>,
    secret: bool,
) -> Result<()> {
    loop {
        let required = q.need.required(a);
        let prompt = Prompt {
            key: q.key.to_string(),
            text: prompt_text(q.prompt, required.is_some()),
            help: q.help,
            default: default.clone(),
            choices: choices.clone(),
            secret,
            list: false,
            required: required.is_some(),
        };
        let raw = p.answer(&prompt)?;
        // Secrets are taken as typed: spaces may be part of a password.
        let typed = if secret { raw.trim_end_matches(['\r', '\n']) } else { raw.trim() };
        let value = match (typed.is_empty(), &default, required) {
            (false, _, _) => typed.to_string(),
            (true, Some(d), _) => d.clone(),
            (true, None, Some(why)) => {
                p.rejected(&missing(q, why));
                continue;
            }
            (true, None, None) => return Ok(()),
        };
        if !choices.is_empty() && !choices.contains(&value) {
            p.rejected(&Problem::new(
                q.key,
                format!("`{value}` is not one of the choices"),
                format!("choose one of: {}", choices.join(", ")),
            ));
            continue;
        }
        match check(&value, a) {
            Ok(()) => {
                a.set(q.key, Value::String(value));
                return Ok(());
            }
            Err(e) => p.rejected(&e.problem(q.key)),
        }
    }
}

fn list(
    q: &Question,
    a: &mut Answered,
    p: &mut dyn Prompter,
    item: Check,
    all: ListCheck,
    default: Option<String>,
) -> Result<()> {
    let split = |s: &str| -> Vec<String> {
        s.split(|c: char| c == ',' || c.is_whitespace()).filter(|s| !s.is_empty()).map(str::to_string).collect()
    };
    'ask: loop {
        let required = q.need.required(a);
        let prompt = Prompt {
            key: q.key.to_string(),
            text: prompt_text(q.prompt, required.is_some()),
            help: q.help,
            default: default.clone(),
            choices: Vec::new(),
            secret: false,
            list: true,
            required: required.is_some(),
        };
        let mut items = split(&p.answer(&prompt)?);
        if items.is_empty() {
            match (&default, required) {
                (Some(d), _) => items = split(d),
                (None, Some(why)) => {
                    p.rejected(&missing(q, why));
                    continue;
                }
                (None, None) => return Ok(()),
            }
        }
        for (i, it) in items.iter().enumerate() {
            if let Err(e) = item(it, a) {
                p.rejected(&e.at(format!("[{i}]")).problem(q.key));
                continue 'ask;
            }
        }
        match all(&items, a) {
            Ok(()) => {
                a.set(q.key, Value::Sequence(items.into_iter().map(Value::String).collect()));
                return Ok(());
            }
            Err(e) => p.rejected(&e.problem(q.key)),
        }
    }
}

/// Row by row, cell by cell; an empty first cell (with nothing to default to) ends the
/// table. A table-wide problem (too few servers, this node missing) starts it over.
fn table(
    q: &Question,
    facts: &Facts,
    a: &mut Answered,
    p: &mut dyn Prompter,
    columns: &[Column],
    all: TableCheck,
    kept: &[Row],
) -> Result<()> {
    loop {
        let mut rows: Vec<Row> = Vec::new();
        'rows: loop {
            let i = rows.len();
            let mut row = Vec::new();
            for (ci, c) in columns.iter().enumerate() {
                if c.optional {
                    // Kept from an earlier run, or left to the file and ~/.ssh/config.
                    row.push(kept.get(i).and_then(|r| r.get(ci)).cloned().unwrap_or_default());
                    continue;
                }
                let key = format!("{}[{i}].{}", q.key, c.key);
                let kept_cell = kept.get(i).and_then(|r| r.get(ci)).filter(|v| !v.is_empty()).cloned();
                let default = kept_cell.or_else(|| (c.suggest)(a, facts, i));
                loop {
                    let prompt = Prompt {
                        key: key.clone(),
                        text: c.prompt.replace("{n}", &(i + 1).to_string()),
                        help: c.help,
                        default: default.clone(),
                        choices: Vec::new(),
                        secret: false,
                        list: false,
                        required: ci > 0,
                    };
                    let raw = p.answer(&prompt)?;
                    let value = match (raw.trim(), &default) {
                        ("", Some(d)) => d.clone(),
                        ("", None) if ci == 0 => break 'rows,
                        ("", None) => {
                            p.rejected(&Problem::new(&key, "missing required key", format!("add {}", c.help)));
                            continue;
                        }
                        (typed, _) => typed.to_string(),
                    };
                    match (c.check)(&value, a) {
                        Ok(()) => {
                            row.push(value);
                            break;
                        }
                        Err(e) => p.rejected(&e.problem(&key)),
                    }
                }
            }
            rows.push(row);
        }
        if rows.is_empty() {
            match q.need.required(a) {
                Some(why) => {
                    p.rejected(&missing(q, why));
                    continue;
                }
                None => return Ok(()),
            }
        }
        match all(&rows, a) {
            Ok(()) => {
                a.set(q.key, table_value(columns, &rows));
                return Ok(());
            }
            Err(e) => p.rejected(&e.problem(q.key)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, VecDeque};

    /// Answers prompts from a script per key; an unscripted prompt takes its default
    /// (Enter). Records every prompt, rejection and note.
    #[derive(Default)]
    struct Scripted {
        script: BTreeMap<String, VecDeque<String>>,
        asked: Vec<String>,
        /// Each prompt's key and text, as shown.
        texts: Vec<(String, String)>,
        rejected: Vec<Problem>,
        notes: Vec<String>,
    }

    impl Prompter for Scripted {
        fn answer(&mut self, p: &Prompt<'_>) -> Result<String> {
            self.asked.push(p.key.clone());
            self.texts.push((p.key.clone(), p.text.clone()));
            assert!(self.asked.len() < 200, "the wizard loops: {:?}", self.rejected);
            Ok(self.script.get_mut(&p.key).and_then(VecDeque::pop_front).unwrap_or_default())
        }
        fn rejected(&mut self, problem: &Problem) {
            self.rejected.push(problem.clone());
        }
        fn note(&mut self, text: &str) {
            self.notes.push(text.to_string());
        }
    }

    fn check_password_is_right(a: &Answered) -> std::result::Result<Option<String>, Problem> {
        match a.text("ldap.bind_password") {
            None => Ok(None),
            Some("right-pw") => Ok(Some("3 users".into())),
            Some(_) => Err(Problem::new("ldap.bind_dn", "bind refused", "check the password")),
        }
    }

    #[test]
    fn a_failed_live_check_asks_the_whole_section_again_offering_earlier_answers() {
        let mut p = Scripted::default();
        for (k, v) in [
            ("profile", vec!["single-node"]),
            ("node.name", vec!["n1"]),
            ("node.ip", vec!["192.0.2.10"]),
            ("cluster.ingress_domain", vec!["p.example.test"]),
            ("ldap.url", vec!["ldaps://ldap.example.test"]),
            ("ldap.bind_dn", vec!["cn=reader,dc=example,dc=org"]),
            ("ldap.bind_password", vec!["wrong-pw", "right-pw"]),
            ("ldap.users_dn", vec!["ou=people,dc=example,dc=org"]),
        ] {
            p.script.insert(k.into(), v.into_iter().map(String::from).collect());
        }
        let check = LiveCheck {
            section: "ldap",
            run: check_password_is_right,
            reask: Reask::Section,
            entry: None,
            skippable: true,
        };
        let (answers, _) = ask_checked(super::super::questions(), &Facts::default(), &mut p, &[check]).unwrap();
        let ldap = answers.ldap.expect("ldap answers");
        assert_eq!(ldap.bind_password.expose(), "right-pw");
        // Asked twice, and the second time the URL was offered back (Enter kept it).
        assert_eq!(p.asked.iter().filter(|k| *k == "ldap.url").count(), 2);
        assert_eq!(ldap.url.to_string(), "ldaps://ldap.example.test:636");
        assert_eq!(p.rejected.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), ["ldap.bind_dn"]);
        assert_eq!(p.notes, ["3 users"]);
        // The check ran after the last ldap question, not before the section ended.
        let last_ldap = p.asked.iter().rposition(|k| k.starts_with("ldap.")).unwrap();
        assert_eq!(p.asked[last_ldap], "ldap.groups_dn");
    }

    #[test]
    fn a_wizard_run_without_ldap_runs_no_live_check() {
        let mut p = Scripted::default();
        for (k, v) in [
            ("profile", "single-node"),
            ("node.name", "n1"),
            ("node.ip", "192.0.2.10"),
            ("cluster.ingress_domain", "p.example.test"),
        ] {
            p.script.insert(k.into(), VecDeque::from([v.to_string()]));
        }
        let check = LiveCheck {
            section: "ldap",
            run: check_password_is_right,
            reask: Reask::Section,
            entry: None,
            skippable: true,
        };
        let (answers, _) = ask_checked(super::super::questions(), &Facts::default(), &mut p, &[check]).unwrap();
        assert!(answers.ldap.is_none() && p.notes.is_empty() && p.rejected.is_empty(), "{:?}", p.rejected);
        assert_eq!(p.asked.iter().filter(|k| k.starts_with("ldap.")).collect::<Vec<_>>(), ["ldap.url"]);
    }

    #[test]
    fn with_monitoring_in_the_profile_the_wizard_asks_its_groups_and_receivers() {
        let monitoring = |profiles: Vec<(String, Vec<String>)>| {
            let bundle = super::super::BundleFacts {
                charts: vec![("grafana".into(), "monitoring".into()), ("prometheus".into(), "monitoring".into())],
                profiles,
            };
            Facts { bundle: Some(bundle), ..Facts::default() }
        };
        let mut p = Scripted::default();
        script(&mut p, &NODE);
        script(
            &mut p,
            &[
                ("ldap.url", &["ldaps://ldap.example.test"]),
                ("ldap.bind_dn", &["cn=reader,dc=example,dc=org"]),
                ("ldap.bind_password", &["right-pw"]),
                ("ldap.users_dn", &["ou=people,dc=example,dc=org"]),
                ("monitoring.grafana_admin_group", &["ops-admins"]),
                ("monitoring.alert_smtp_smarthost", &["mail.example.internal:25"]),
                ("monitoring.alert_email_from", &["alertmanager@example.org"]),
                ("monitoring.alert_email_to", &["ops@example.org"]),
            ],
        );
        let (answers, _) = ask_checked(super::super::questions(), &monitoring(Vec::new()), &mut p, &[]).unwrap();
        let asked: Vec<&str> = p.asked.iter().filter(|k| k.starts_with("monitoring.")).map(String::as_str).collect();
        assert_eq!(
            asked,
            [
                "monitoring.grafana_admin_group",
                "monitoring.grafana_editor_group",
                "monitoring.alert_webhook_url",
                "monitoring.alert_smtp_smarthost",
                "monitoring.alert_email_from",
                "monitoring.alert_email_to"
            ]
        );
        let m = &answers.monitoring;
        assert_eq!(
            (m.grafana_admin_group.as_str(), m.grafana_editor_group.as_str()),
            ("ops-admins", "grafana-editors")
        );
        assert_eq!(m.alert_mail.as_ref().map(|x| x.to.as_str()), Some("ops@example.org"));
        assert!(m.alert_webhook_url.is_none());

        // Without a directory there are no groups to map; without a relay no addresses.
        let mut p = Scripted::default();
        script(&mut p, &NODE);
        ask_checked(super::super::questions(), &monitoring(Vec::new()), &mut p, &[]).unwrap();
        let asked: Vec<&str> = p.asked.iter().filter(|k| k.starts_with("monitoring.")).map(String::as_str).collect();
        assert_eq!(asked, ["monitoring.alert_webhook_url", "monitoring.alert_smtp_smarthost"]);

        // A profile without the component: nothing about monitoring is asked.
        let mut p = Scripted::default();
        script(&mut p, &NODE);
        let profiles = vec![("single-node".to_string(), vec!["platform".to_string()])];
        ask_checked(super::super::questions(), &monitoring(profiles), &mut p, &[]).unwrap();
        assert!(!p.asked.iter().any(|k| k.starts_with("monitoring.")), "{:?}", p.asked);
    }

    fn keycloak_facts() -> Facts {
        let bundle =
            super::super::BundleFacts { charts: vec![("keycloakx".into(), "platform".into())], profiles: Vec::new() };
        Facts { bundle: Some(bundle), ..Facts::default() }
    }

    fn script(p: &mut Scripted, answers: &[(&str, &[&str])]) {
        for (k, v) in answers {
            p.script.insert(k.to_string(), v.iter().map(|s| s.to_string()).collect());
        }
    }

    const NODE: [(&str, &[&str]); 4] = [
        ("profile", &["single-node"]),
        ("node.name", &["n1"]),
        ("node.ip", &["192.0.2.10"]),
        ("cluster.ingress_domain", &["p.example.test"]),
    ];

    #[test]
    fn with_keycloak_in_the_bundle_the_wizard_insists_on_the_ldap_section_and_tests_it() {
        let mut p = Scripted::default();
        script(&mut p, &NODE);
        script(
            &mut p,
            &[
                // Enter first: refused, the bundle's Keycloak needs a directory.
                ("ldap.url", &["", "ldaps://ldap.example.test"]),
                ("ldap.bind_dn", &["cn=reader,dc=example,dc=org"]),
                ("ldap.bind_password", &["right-pw"]),
                ("ldap.users_dn", &["ou=people,dc=example,dc=org"]),
            ],
        );
        let check = LiveCheck {
            section: "ldap",
            run: check_password_is_right,
            reask: Reask::Section,
            entry: None,
            skippable: true,
        };
        let (answers, _) = ask_checked(super::super::questions(), &keycloak_facts(), &mut p, &[check]).unwrap();
        assert!(answers.ldap.is_some());
        assert_eq!(p.rejected.len(), 1, "{:?}", p.rejected);
        assert_eq!(p.rejected[0].key, "ldap.url");
        assert!(p.rejected[0].cause.contains("keycloakx"), "{}", p.rejected[0]);
        assert_eq!(p.notes, ["3 users"], "the live check ran on the section it insisted on");
        // Single node: no database question.
        assert!(!p.asked.iter().any(|k| k.starts_with("keycloak_database.")), "{:?}", p.asked);
    }

    #[test]
    fn an_ha_first_server_with_keycloak_is_asked_for_the_database_with_vendor_defaults() {
        let mut p = Scripted::default();
        script(&mut p, &NODE);
        script(
            &mut p,
            &[
                ("profile", &["ha"]),
                ("node.ip", &["192.0.2.11"]),
                ("ha.servers[0].name", &["n1"]),
                ("ha.servers[0].ip", &["192.0.2.11"]),
                ("ha.servers[1].name", &["n2"]),
                ("ha.servers[1].ip", &["192.0.2.12"]),
                ("ha.servers[2].name", &["n3"]),
                ("ha.servers[2].ip", &["192.0.2.13"]),
                ("ldap.url", &["ldaps://ldap.example.test"]),
                ("ldap.bind_dn", &["cn=reader,dc=example,dc=org"]),
                ("ldap.bind_password", &["right-pw"]),
                ("ldap.users_dn", &["ou=people,dc=example,dc=org"]),
                ("keycloak_database.host", &["", "db.example.test"]),
                ("keycloak_database.port", &["99999", ""]),
                ("keycloak_database.password", &["db-pw-51c0"]),
            ],
        );
        let (answers, doc) = ask_checked(super::super::questions(), &keycloak_facts(), &mut p, &[]).unwrap();
        let db = answers.keycloak_database.expect("database answers");
        // Enter took the suggestions: postgres, its port, `keycloak` for name and user.
        assert_eq!(
            (db.vendor.as_str(), db.port, db.name.as_str(), db.username.as_str()),
            ("postgres", 5432, "keycloak", "keycloak")
        );
        assert_eq!(db.password.expose(), "db-pw-51c0");
        let keys: Vec<&str> = p.rejected.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["keycloak_database.host", "keycloak_database.port"], "{:?}", p.rejected);
        assert!(!doc.to_yaml().contains("db-pw-51c0"));
        assert!(p.rejected.iter().all(|r| !r.to_string().contains("db-pw-51c0")));
    }

    #[test]
    fn the_wizard_asks_each_node_by_name_address_and_role_until_an_empty_name() {
        let mut p = Scripted::default();
        script(&mut p, &NODE);
        script(
            &mut p,
            &[
                ("profile", &["ha"]),
                ("node.ip", &["192.0.2.11"]),
                // Asked twice: the first round names node 3 by DNS without a node IP,
                // which the table as a whole refuses. Enter takes this node's address
                // for node 1, and `server` for nodes 1-3.
                ("nodes[0].name", &["n1", "n1"]),
                ("nodes[1].name", &["n2", "n2"]),
                ("nodes[1].address", &["192.0.2.12", "192.0.2.12"]),
                ("nodes[2].name", &["n3", "n3"]),
                ("nodes[2].address", &["n3.site.example", "192.0.2.13"]),
                ("nodes[3].name", &["a1", "a1"]),
                ("nodes[3].address", &["192.0.2.21", "192.0.2.21"]),
            ],
        );
        let (answers, doc) = ask_checked(super::super::questions(), &Facts::default(), &mut p, &[]).unwrap();
        let roles: Vec<String> = answers.nodes.iter().map(|n| format!("{}:{}", n.name, n.role)).collect();
        assert_eq!(roles, ["n1:server", "n2:server", "n3:server", "a1:agent"]);
        assert_eq!(answers.ha.as_ref().map(|h| h.servers.len()), Some(3));
        let rejected: Vec<&str> = p.rejected.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(rejected, ["nodes[2].node_ip"]);
        // `ha` is not asked beside `nodes`, and the SSH settings are left to the file.
        assert!(!p.asked.iter().any(|k| k.starts_with("ha.") || k.contains("ssh_")), "{:?}", p.asked);
        assert!(doc.to_yaml().contains("nodes:"), "{}", doc.to_yaml());
    }

    #[test]
    fn the_ldap_url_prompt_offers_an_empty_answer_only_where_it_is_taken() {
        let url_texts = |p: &Scripted| -> Vec<String> {
            p.texts.iter().filter(|(k, _)| k == "ldap.url").map(|(_, t)| t.clone()).collect()
        };
        // Keycloak in the bundle: the directory is required, so "empty" is not offered.
        let mut p = Scripted::default();
        script(&mut p, &NODE);
        script(
            &mut p,
            &[
                ("ldap.url", &["", "ldaps://ldap.example.test"]),
                ("ldap.bind_dn", &["cn=reader,dc=example,dc=org"]),
                ("ldap.bind_password", &["right-pw"]),
                ("ldap.users_dn", &["ou=people,dc=example,dc=org"]),
            ],
        );
        ask_checked(super::super::questions(), &keycloak_facts(), &mut p, &[]).unwrap();
        let texts = url_texts(&p);
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert!(texts.iter().all(|t| !t.contains("empty")), "{texts:?}");
        // No Keycloak: "empty: no directory" is offered, and Enter takes it.
        let mut p = Scripted::default();
        script(&mut p, &NODE);
        let (answers, _) = ask_checked(super::super::questions(), &Facts::default(), &mut p, &[]).unwrap();
        assert!(answers.ldap.is_none() && p.rejected.is_empty(), "{:?}", p.rejected);
        assert_eq!(url_texts(&p), ["LDAP/AD server URL (empty: no directory)"]);
    }

    #[test]
    fn a_failed_live_check_may_be_skipped_and_the_answers_say_so() {
        let mut p = Scripted::default();
        script(&mut p, &NODE);
        script(
            &mut p,
            &[
                ("ldap.url", &["ldaps://ldap.example.test"]),
                ("ldap.bind_dn", &["cn=reader,dc=example,dc=org"]),
                ("ldap.bind_password", &["unreachable-pw"]),
                ("ldap.users_dn", &["ou=people,dc=example,dc=org"]),
                ("ldap.live_check", &["skip"]),
            ],
        );
        let check = LiveCheck {
            section: "ldap",
            run: check_password_is_right,
            reask: Reask::Section,
            entry: None,
            skippable: true,
        };
        let (answers, doc) = ask_checked(super::super::questions(), &keycloak_facts(), &mut p, &[check]).unwrap();
        // Asked once: the answers stand as given, and nothing else was asked again.
        assert_eq!(p.asked.iter().filter(|k| *k == "ldap.url").count(), 1, "{:?}", p.asked);
        assert_eq!(answers.ldap.expect("ldap answers").bind_password.expose(), "unreachable-pw");
        let skipped = &answers.skipped_checks;
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].section, "ldap");
        assert!(skipped[0].problem.contains("bind refused"), "{skipped:?}");
        assert_eq!(doc.skipped_checks(), skipped.as_slice());
        // The choice was offered with asking again as the default.
        let choice = p.texts.iter().find(|(k, _)| k == "ldap.live_check").expect("the choice was offered");
        assert!(choice.1.contains("skip"), "{choice:?}");
    }

    #[test]
    fn every_question_is_pre_filled_from_the_kept_answers_and_enter_keeps_the_kept_secret() {
        // An earlier install's answers, as the site keeps them (secret put back).
        let mut first = Scripted::default();
        script(&mut first, &NODE);
        script(
            &mut first,
            &[
                ("node.name", &["kept-node"]),
                ("cluster.tls_san", &["api.p.example.test"]),
                ("ldap.url", &["ldaps://ldap.example.test"]),
                ("ldap.bind_dn", &["cn=reader,dc=example,dc=org"]),
                ("ldap.bind_password", &["kept-pw"]),
                ("ldap.users_dn", &["ou=people,dc=example,dc=org"]),
            ],
        );
        let (kept_answers, kept) = ask_checked(super::super::questions(), &keycloak_facts(), &mut first, &[]).unwrap();
        // Now only Enter, everywhere.
        let mut p = Scripted::default();
        let (answers, doc) =
            ask_prefilled(super::super::questions(), &keycloak_facts(), &mut p, &[], Some(&kept)).unwrap();
        assert!(p.rejected.is_empty(), "{:?}", p.rejected);
        assert_eq!(answers, kept_answers);
        assert_eq!(doc.to_yaml(), kept.to_yaml());
        assert_eq!(answers.ldap.as_ref().unwrap().bind_password.expose(), "kept-pw");
        let password = p.texts.iter().find(|(k, _)| k == "ldap.bind_password").expect("the password was asked");
        assert!(password.1.contains("keep the site's kept one"), "{password:?}");
        // A new password typed replaces the kept one.
        let mut p = Scripted::default();
        script(&mut p, &[("ldap.bind_password", &["new-pw"])]);
        let (answers, _) =
            ask_prefilled(super::super::questions(), &keycloak_facts(), &mut p, &[], Some(&kept)).unwrap();
        assert_eq!(answers.ldap.unwrap().bind_password.expose(), "new-pw");
        assert_eq!(answers.node.name, "kept-node");
    }

    #[test]
    fn problems_are_re_asked_at_the_question_that_owns_the_key() {
        assert!(owns("ha.servers", "ha.servers[1].ip"));
        assert!(owns("ha.servers", "ha.servers"));
        assert!(owns("node.ip", "node.ip"));
        assert!(!owns("node.ip", "node.ipx"));
        assert!(!owns("ha.servers", "ha.agents"));
    }
}
