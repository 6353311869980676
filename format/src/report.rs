//! The reporting seam: libraries never print. They tell a [`Reporter`] what is
//! happening and the binaries decide how to show it (progress bars on a TTY, nothing
//! when piped, JSON for pipelines).

/// Something worth telling the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A long phase starts; `total` is its size in bytes when known.
    Phase { name: &'a str, total: Option<u64> },
    /// `bytes` more bytes of the current phase are done.
    Progress { bytes: u64 },
    /// One bundle entry was read or written and checked.
    Entry { path: &'a str, size: u64 },
    /// A transfer (one blob download) starts; `id` names it in the events that follow,
    /// so a front end can draw one bar per concurrent transfer.
    TransferStart { id: u64, name: &'a str, total: Option<u64> },
    /// `bytes` more bytes of transfer `id` arrived.
    TransferProgress { id: u64, bytes: u64 },
    /// Transfer `id` ended (done or failed).
    TransferDone { id: u64 },
    /// A remark that does not stop the work (e.g. "no checksum sidecar found").
    Warning(&'a str),
}

pub trait Reporter: Sync {
    fn event(&self, event: Event<'_>);
}

/// A reporter that ignores everything (tests, quiet mode).
pub struct Silent;

impl Reporter for Silent {
    fn event(&self, _: Event<'_>) {}
}
