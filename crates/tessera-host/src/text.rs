//! Which characters of user-supplied text must never reach a reader raw: one rule for the
//! terminal (the CLI's `render::escape`) and the browser (the web view's `esc`), so a job name
//! shown in one place is never dangerous in the other.

/// Whether `c` is written out rather than shown: control characters (C0, DEL, C1: `\u{9b}` is
/// a CSI to many terminals) and Unicode's invisible and bidirectional controls, which can hide
/// or reorder what is around them.
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidirectional_marks_are_escaped_and_text_is_not() {
        for c in ['\u{1b}', '\n', '\u{7f}', '\u{9b}', '\u{202e}', '\u{2066}', '\u{200b}', '\u{feff}', '\u{61c}'] {
            assert!(needs_escape(c), "{c:?}");
        }
        for c in ['a', 'é', '漢', ' ', '<', '\u{2030}'] {
            assert!(!needs_escape(c), "{c:?}");
        }
    }
}
