//! A scripted stand-in for the person at the wizard's terminal: the wizard's own
//! question list, validators and live checks run for real; only the typing is
//! scripted.

use std::collections::{BTreeMap, VecDeque};

use airlock_format::error::Result;
use airlock_installer::site::answers::{Problem, Prompt, Prompter};

/// Answers prompts from a script per key; an unscripted prompt takes its default
/// (Enter). Records every prompt, rejection and note.
#[derive(Default)]
pub struct Scripted {
    pub script: BTreeMap<String, VecDeque<String>>,
    pub asked: Vec<String>,
    pub rejected: Vec<Problem>,
    pub notes: Vec<String>,
}

impl Prompter for Scripted {
    fn answer(&mut self, p: &Prompt<'_>) -> Result<String> {
        self.asked.push(p.key.clone());
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
