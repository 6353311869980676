//! Progress on a terminal: one bar for the current phase (verifying, staging,
//! compressing, a download's total) and one per running transfer (the bundler's
//! concurrent blob downloads). Bars are drawn on stderr and only when it is a terminal;
//! warnings always reach stderr, above the bars when there are any.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use airlock_format::report::{Event, Reporter};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Transfers smaller than this (configs, manifests) come and go too fast for a bar.
const SMALL_TRANSFER: u64 = 1 << 20;

/// The bars being drawn, if any: the `--verbose` log and warnings print above them.
static DRAWING: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// A line on stderr that does not tear a progress bar being drawn.
pub(crate) fn eprint_line(line: &str) {
    match DRAWING.lock().expect("progress lock").as_ref() {
        Some(m) => {
            let _ = m.println(line);
        }
        None => eprintln!("{line}"),
    }
}

/// A [`Reporter`] that draws. Made per phase of work with [`crate::Ui::progress`];
/// [`Progress::finish`] clears what it drew.
pub struct Progress {
    bars: Option<Bars>,
}

struct Bars {
    multi: MultiProgress,
    phase: Mutex<Option<ProgressBar>>,
    transfers: Mutex<HashMap<u64, ProgressBar>>,
}

fn bytes_style(width: usize) -> ProgressStyle {
    ProgressStyle::with_template(&format!(
        "{{msg:{width}}} [{{bar:40}}] {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}}"
    ))
    .expect("template")
    .progress_chars("=> ")
}

impl Progress {
    /// Bars when `enabled` and stderr is a terminal; otherwise only warnings print.
    pub fn new(enabled: bool) -> Self {
        let bars = (enabled && std::io::stderr().is_terminal()).then(|| {
            let multi = MultiProgress::new();
            *DRAWING.lock().expect("progress lock") = Some(multi.clone());
            Bars { multi, phase: Mutex::new(None), transfers: Mutex::new(HashMap::new()) }
        });
        Self { bars }
    }

    /// Clears the bars; what follows prints on a clean line.
    pub fn finish(&self) {
        let Some(b) = &self.bars else { return };
        if let Some(p) = b.phase.lock().expect("progress lock").take() {
            p.finish_and_clear();
        }
        for (_, t) in b.transfers.lock().expect("progress lock").drain() {
            t.finish_and_clear();
        }
        let _ = b.multi.clear();
        *DRAWING.lock().expect("progress lock") = None;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Reporter for Progress {
    fn event(&self, event: Event<'_>) {
        let Some(bars) = &self.bars else {
            if let Event::Warning(w) = event {
                eprintln!("warning: {w}");
            }
            return;
        };
        match event {
            Event::Phase { name, total } => {
                // One phase bar, reused: bars removed from a MultiProgress leave their
                // last frame behind on some terminals.
                let mut g = bars.phase.lock().expect("progress lock");
                let b = g.get_or_insert_with(|| bars.multi.add(ProgressBar::new_spinner()));
                match total {
                    Some(t) => {
                        b.set_style(bytes_style(30));
                        b.set_length(t);
                        b.set_position(0);
                        b.reset_eta();
                    }
                    None => {
                        b.set_style(ProgressStyle::default_spinner());
                        b.tick();
                    }
                }
                b.set_message(name.to_string());
            }
            Event::Progress { bytes } => {
                if let Some(b) = bars.phase.lock().expect("progress lock").as_ref() {
                    b.inc(bytes)
                }
            }
            Event::TransferStart { total: Some(t), .. } if t < SMALL_TRANSFER => {}
            Event::TransferStart { id, name, total } => {
                // Into the MultiProgress first: a bar draws to stderr on its own until
                // then, and that stray frame would stay on the screen.
                let b = bars.multi.add(ProgressBar::new(total.unwrap_or(0)));
                b.set_style(bytes_style(40));
                b.set_message(name.to_string());
                bars.transfers.lock().expect("progress lock").insert(id, b);
            }
            Event::TransferProgress { id, bytes } => {
                if let Some(b) = bars.transfers.lock().expect("progress lock").get(&id) {
                    b.inc(bytes)
                }
            }
            Event::TransferDone { id } => {
                if let Some(b) = bars.transfers.lock().expect("progress lock").remove(&id) {
                    b.finish_and_clear();
                    bars.multi.remove(&b);
                }
            }
            Event::Warning(w) => {
                let _ = bars.multi.println(format!("warning: {w}"));
            }
            Event::Entry { .. } => {}
        }
    }
}
