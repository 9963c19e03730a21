//! Uppercasing as Python's `str.upper()` does it: the full Unicode case mapping, where one
//! character may become several (`ß` -> `SS`, `ﬁ` -> `FI`, `ŉ` -> `ʼN`).
//!
//! Rust's `str::to_uppercase` applies the same mapping (UnicodeData plus the unconditional rules
//! of SpecialCasing). The two can differ only on the code points that Unicode versions after
//! Python's own added or changed.

/// Returns `text` uppercased, reusing its buffer when it is ASCII.
///
/// ASCII is the common case and maps byte for byte, so it is uppercased in place: no allocation
/// and no per-character table lookups. Anything else goes through the full Unicode mapping, which
/// may change the length and so needs a new string.
///
/// ```
/// use formatdata::uppercase::uppercase;
///
/// assert_eq!(uppercase("hello,world!".to_owned()), "HELLO,WORLD!");
/// assert_eq!(uppercase("straße ﬁ".to_owned()), "STRASSE FI");
/// ```
pub fn uppercase(mut text: String) -> String {
    if text.is_ascii() {
        text.make_ascii_uppercase();
        text
    } else {
        text.to_uppercase()
    }
}

#[cfg(test)]
mod tests {
    use super::uppercase;
    use proptest::prelude::*;

    fn upper(text: &str) -> String {
        uppercase(text.to_owned())
    }

    #[test]
    fn ascii_is_uppercased_in_place() {
        let text = String::from("hello,world!");
        let buffer = text.as_ptr();
        let upper = uppercase(text);
        assert_eq!(upper, "HELLO,WORLD!");
        assert_eq!(upper.as_ptr(), buffer, "ASCII must not be copied");
    }

    #[test]
    fn empty_text_stays_empty() {
        assert_eq!(upper(""), "");
    }

    #[test]
    fn one_character_can_become_several() {
        assert_eq!(upper("straße"), "STRASSE");
        assert_eq!(upper("ﬁnance"), "FINANCE");
        assert_eq!(upper("ŉ"), "\u{2BC}N");
        assert_eq!(upper("ΐ"), "\u{399}\u{308}\u{301}");
        assert_eq!(upper("և"), "ԵՒ");
    }

    #[test]
    fn other_scripts_follow_unicode() {
        assert_eq!(upper("αβγ ς"), "ΑΒΓ Σ");
        assert_eq!(upper("привет"), "ПРИВЕТ");
        assert_eq!(upper("բարեւ"), "ԲԱՐԵՒ");
        assert_eq!(upper("ﬓ"), "ՄՆ");
        assert_eq!(upper("ǆ"), "Ǆ");
    }

    #[test]
    fn caseless_text_is_unchanged() {
        assert_eq!(upper("日本語 😀👍🏽 123"), "日本語 😀👍🏽 123");
        assert_eq!(upper("café 😀"), "CAFÉ 😀");
    }

    proptest! {
        #[test]
        fn equals_std_to_uppercase(text in any::<String>()) {
            prop_assert_eq!(upper(&text), text.to_uppercase());
        }

        #[test]
        fn equals_std_to_uppercase_on_mostly_ascii(text in "[a-zA-Z0-9 ,.!ßäöü]{0,64}") {
            prop_assert_eq!(upper(&text), text.to_uppercase());
        }
    }
}
