//! A string that must never be printed: passwords now, LDAP bind credentials later.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What every printed form of a [`Secret`] shows.
pub const REDACTED: &str = "<redacted>";

/// A secret value. `Debug`, `Display` and `Serialize` all show `<redacted>`, so a
/// secret cannot leak through a log line, a `--dry-run` plan, a JSON report or a
/// support bundle by accident; [`Secret::expose`] is the one greppable way to the text.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret text, for the one place that must write it (a 0600 file).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

/// Reading is allowed (other documents may carry secrets); a value that is literally
/// `<redacted>` is refused, because it comes from a redacted dump, not from a person.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == REDACTED {
            return Err(serde::de::Error::custom("the value is `<redacted>`, a placeholder from a redacted dump"));
        }
        Ok(Self(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_print_as_redacted_in_every_form() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(format!("{:?}", Some(&s)), "Some(<redacted>)");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn a_redacted_placeholder_is_not_taken_for_a_secret() {
        assert!(serde_json::from_str::<Secret>("\"<redacted>\"").is_err());
        assert_eq!(serde_json::from_str::<Secret>("\"pw\"").unwrap().expose(), "pw");
    }
}
