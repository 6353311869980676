//! The exit codes of both programs, in one enum (`docs/exit-codes.md` is the table
//! users read). Each binary maps its command's typed outcome to an [`ExitStatus`] and
//! exits with [`ExitStatus::code`]; no other number is returned.

use crate::error::ErrorKind;

/// What a run's exit code says. The numbers never change: scripts and tickets rely on
/// them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Success,
    /// The input given is wrong (a spec, an answers file, a key, a missing file named
    /// by the user).
    Input,
    /// The command line is wrong (printed by the argument parser).
    Usage,
    Signature,
    Corrupt,
    Unsafe,
    Io,
    /// `install --check`: steps are still pending.
    Pending,
    /// A preflight check failed and was not overridden.
    Preflight,
    /// `ldap test`: the directory could not be used with the answers.
    Ldap,
    /// `pki status`: a certificate has expired.
    Expired,
    /// `status`: the node is not as installed or not healthy.
    NeedsAttention,
    /// `upgrade`: the version policy refuses the bundle.
    Policy,
    /// `upgrade` failed and the previous release was put back.
    RolledBack,
    /// `upgrade` failed and putting the previous release back failed too.
    RollbackFailed,
}

/// The four kinds of unsuccessful exit, for docs and scripts that only need the gist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitClass {
    Success,
    /// Fix the input or the command line and run again.
    UserError,
    /// Airlock refused to go on to protect the site: nothing was changed (a forged,
    /// damaged or unsafe bundle, a failed preflight, a policy refusal).
    Refused,
    /// The site needs an operator: something pending, unhealthy, expired, or an
    /// upgrade that was rolled back.
    NeedsAttention,
}

impl ExitStatus {
    pub const ALL: [ExitStatus; 15] = [
        ExitStatus::Success,
        ExitStatus::Input,
        ExitStatus::Usage,
        ExitStatus::Signature,
        ExitStatus::Corrupt,
        ExitStatus::Unsafe,
        ExitStatus::Io,
        ExitStatus::Pending,
        ExitStatus::Preflight,
        ExitStatus::Ldap,
        ExitStatus::Expired,
        ExitStatus::NeedsAttention,
        ExitStatus::Policy,
        ExitStatus::RolledBack,
        ExitStatus::RollbackFailed,
    ];

    /// The process exit code (`docs/exit-codes.md`).
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Input => 1,
            ExitStatus::Usage => 2,
            ExitStatus::Signature => 3,
            ExitStatus::Corrupt => 4,
            ExitStatus::Unsafe => 5,
            ExitStatus::Io => 6,
            ExitStatus::Pending => 7,
            ExitStatus::Preflight => 8,
            ExitStatus::Ldap => 9,
            ExitStatus::Expired => 10,
            ExitStatus::NeedsAttention => 11,
            ExitStatus::Policy => 12,
            ExitStatus::RolledBack => 13,
            ExitStatus::RollbackFailed => 14,
        }
    }

    /// The status with exit code `code`, if it is one of ours.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }

    pub fn class(self) -> ExitClass {
        match self {
            ExitStatus::Success => ExitClass::Success,
            ExitStatus::Input | ExitStatus::Usage | ExitStatus::Io | ExitStatus::Ldap => ExitClass::UserError,
            ExitStatus::Signature
            | ExitStatus::Corrupt
            | ExitStatus::Unsafe
            | ExitStatus::Preflight
            | ExitStatus::Policy => ExitClass::Refused,
            ExitStatus::Pending
            | ExitStatus::Expired
            | ExitStatus::NeedsAttention
            | ExitStatus::RolledBack
            | ExitStatus::RollbackFailed => ExitClass::NeedsAttention,
        }
    }
}

impl From<ErrorKind> for ExitStatus {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::Input => ExitStatus::Input,
            ErrorKind::Signature => ExitStatus::Signature,
            ErrorKind::Corrupt => ExitStatus::Corrupt,
            ErrorKind::Unsafe => ExitStatus::Unsafe,
            ErrorKind::Io => ExitStatus::Io,
        }
    }
}

impl From<ExitStatus> for std::process::ExitCode {
    fn from(s: ExitStatus) -> Self {
        std::process::ExitCode::from(s.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exit_code_from_0_to_14_has_exactly_one_status() {
        let codes: Vec<u8> = ExitStatus::ALL.iter().map(|s| s.code()).collect();
        assert_eq!(codes, (0..=14).collect::<Vec<u8>>());
        for s in ExitStatus::ALL {
            assert_eq!(ExitStatus::from_code(s.code()), Some(s));
        }
    }

    #[test]
    fn error_kinds_keep_their_documented_codes() {
        for (kind, code) in [
            (ErrorKind::Input, 1),
            (ErrorKind::Signature, 3),
            (ErrorKind::Corrupt, 4),
            (ErrorKind::Unsafe, 5),
            (ErrorKind::Io, 6),
        ] {
            assert_eq!(ExitStatus::from(kind).code(), code);
            assert_eq!(kind.exit_code(), code as i32);
        }
    }
}
