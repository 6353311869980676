//! Text from outside (answers files, bundle manifests, file names) shown to a person.
//! A terminal obeys control characters: an escape sequence in a value could recolour,
//! move the cursor or clear the screen, and a newline or carriage return could forge a
//! line of output ("verified" where a bundle failed). So every message escapes them
//! where it is printed ([`crate::error::Error`]'s `Display`), and the signed manifest
//! refuses them in the names it gives ([`crate::manifest::Manifest::validate`]).

use std::borrow::Cow;

/// `s` with every control character (C0, DEL, C1: newlines, carriage returns, escape
/// sequences) written as its escape (`\n`, `\r`, `\u{1b}`); tabs stay.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_shown_escaped) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_shown_escaped(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A control character other than a tab: what a name shown on a terminal may not hold.
pub fn is_shown_escaped(c: char) -> bool {
    c.is_control() && c != '\t'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_borrowed() {
        assert!(matches!(escape_controls("node-1 ä ✓\tok"), Cow::Borrowed(_)));
        assert_eq!(escape_controls("a\nerror: forged"), "a\\nerror: forged");
        assert_eq!(escape_controls("x\u{1b}[2Jy\r\u{9b}z\u{7f}"), "x\\u{1b}[2Jy\\r\\u{9b}z\\u{7f}");
    }
}
