//! Errors that say what, where and what to do.
//!
//! Every error names the artifact or path it is about, the cause, and where we know
//! one, a `hint:` with the fix. The [`ErrorKind`] decides the process exit code, so
//! support can tell a forged bundle from a scratched disk without reading text.

use std::fmt;
use std::io;
use std::path::Path;

/// The class of a failure; each maps to a documented exit code (docs/exit-codes.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// Missing, malformed, untrusted or invalid signature. Exit 3.
    Signature,
    /// Content does not match the signed manifest: digest or size mismatch, truncated
    /// or undecodable data, missing, extra, duplicate or reordered entries. Exit 4.
    Corrupt,
    /// An entry that would escape or subvert the target: absolute or `..` paths,
    /// links, devices, setuid bits. Exit 5.
    Unsafe,
    /// Reading or writing failed: file missing, permission denied, disk full. Exit 6.
    Io,
    /// The user's input is wrong: a spec, an answers file, a key, a flag. Exit 1.
    Input,
}

impl ErrorKind {
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Input => 1,
            ErrorKind::Signature => 3,
            ErrorKind::Corrupt => 4,
            ErrorKind::Unsafe => 5,
            ErrorKind::Io => 6,
        }
    }
}

/// An error about one artifact or path.
#[derive(Debug)]
pub struct Error {
    pub kind: ErrorKind,
    /// The artifact, entry or path the error is about.
    pub subject: String,
    /// What went wrong, in words for the operator.
    pub cause: String,
    /// What to do about it.
    pub hint: Option<String>,
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, subject: impl Into<String>, cause: impl Into<String>) -> Self {
        Self { kind, subject: subject.into(), cause: cause.into(), hint: None, source: None }
    }
    pub fn signature(subject: impl Into<String>, cause: impl Into<String>) -> Self {
        Self::new(ErrorKind::Signature, subject, cause)
    }
    pub fn corrupt(subject: impl Into<String>, cause: impl Into<String>) -> Self {
        Self::new(ErrorKind::Corrupt, subject, cause)
    }
    pub fn unsafe_entry(subject: impl Into<String>, cause: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsafe, subject, cause)
    }
    pub fn input(subject: impl Into<String>, cause: impl Into<String>) -> Self {
        Self::new(ErrorKind::Input, subject, cause)
    }
    /// An I/O failure on `path`; disk-full and permission problems get their own hint.
    pub fn io(path: impl AsRef<Path>, err: io::Error) -> Self {
        // By kind, not errno: wrapped errors (which add the path) keep only their kind.
        let hint = match err.kind() {
            io::ErrorKind::StorageFull => {
                Some("free space on that filesystem (or choose another location) and run the command again".to_string())
            }
            io::ErrorKind::PermissionDenied => {
                Some("check the permissions of that path, or run as a user who may write it".to_string())
            }
            io::ErrorKind::ReadOnlyFilesystem => {
                Some("that filesystem is read-only; choose a writable location for output".to_string())
            }
            io::ErrorKind::NotFound => Some("check the path".to_string()),
            _ => None,
        };
        // One wording for a missing file, whether the OS said so ("No such file or
        // directory (os error 2)") or a lookup of ours did ("entity not found").
        let cause = match err.kind() {
            io::ErrorKind::NotFound => "does not exist".to_string(),
            _ => err.to_string(),
        };
        let mut e = Self::new(ErrorKind::Io, path.as_ref().display().to_string(), cause);
        e.hint = hint;
        e.source = Some(Box::new(err));
        e
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
    /// Puts more context in front of the subject: `image docker.io/x:1: blob sha256:…`.
    pub fn within(mut self, outer: impl fmt::Display) -> Self {
        self.subject = format!("{outer}: {}", self.subject);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Subjects and causes carry values from files and manifests: a control
        // character in one must not steer the terminal or forge a line (text.rs).
        use crate::text::escape_controls as shown;
        write!(f, "{}: {}", shown(&self.subject), shown(&self.cause))?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {}", shown(h))?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Attaches a path to `io::Result`s.
pub trait IoContext<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
