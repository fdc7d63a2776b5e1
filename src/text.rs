//! Text from users, files and the system, made safe to print on a terminal.
//!
//! Anything joulerun echoes that it did not write itself (the command line, paths, file
//! contents, error strings of the OS) may hold escape sequences that move the cursor or
//! recolour the terminal, or bidirectional overrides that make text read backwards
//! ("Trojan Source"). [`escape_line`] and [`escape_text`] render such characters as
//! visible escapes (`\x1b`, `\u{202e}`); everything else is left as it is. Reports apply
//! them where they print, so no caller has to remember. JSON is not touched: its encoder
//! already escapes control characters, and its values must stay the real ones.

use std::borrow::Cow;
use std::fmt::Write;

/// Bidirectional formatting characters: embeddings, overrides, isolates and marks.
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

fn needs_escape(c: char, keep_newlines: bool) -> bool {
    if c == '\n' {
        return !keep_newlines;
    }
    c.is_control() || is_bidi_control(c)
}

fn escape(s: &str, keep_newlines: bool) -> Cow<'_, str> {
    if !s.chars().any(|c| needs_escape(c, keep_newlines)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !needs_escape(c, keep_newlines) {
            out.push(c);
            continue;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    Cow::Owned(out)
}

/// One line of untrusted text: every control character (newlines included) and every
/// bidirectional control escaped.
pub fn escape_line(s: &str) -> Cow<'_, str> {
    escape(s, false)
}

/// Several lines: like [`escape_line`], but newlines are kept as line breaks.
pub fn escape_text(s: &str) -> Cow<'_, str> {
    escape(s, true)
}

/// At most `max` characters: the beginning and the end of `s` with ` … ` between them,
/// so a long command line stays readable and both its program and its last arguments
/// show.
pub fn elide_middle(s: &str, max: usize) -> Cow<'_, str> {
    let n = s.chars().count();
    if n <= max || max < 10 {
        return Cow::Borrowed(s);
    }
    let keep = max - 3;
    let head = keep * 2 / 3;
    let tail = keep - head;
    let mut out: String = s.chars().take(head).collect();
    out.push_str(" … ");
    out.extend(s.chars().skip(n - tail));
    Cow::Owned(out)
}

/// A floating-point number with negative zero turned into zero, so that nothing prints
/// as `-0.00`.
pub fn no_negative_zero(x: f64) -> f64 {
    if x == 0.0 { 0.0 } else { x }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_terminal_controls_and_bidi() {
        assert_eq!(escape_line("plain text é"), "plain text é");
        assert!(matches!(escape_line("plain"), Cow::Borrowed(_)));
        assert_eq!(escape_line("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(escape_line("x\ny\r\t"), "x\\ny\\r\\t");
        assert_eq!(escape_line("\u{202e}txt.exe"), "\\u{202e}txt.exe");
        assert_eq!(escape_line("\u{7f}\u{85}"), "\\x7f\\x85");
        assert_eq!(escape_text("one\ntwo\x07"), "one\ntwo\\x07");
    }

    #[test]
    fn elides_long_lines_in_the_middle() {
        assert_eq!(elide_middle("short", 40), "short");
        let long = format!("python train.py {} --last-arg", "x".repeat(500));
        let e = elide_middle(&long, 60);
        assert_eq!(e.chars().count(), 60);
        assert!(e.starts_with("python train.py "), "{e}");
        assert!(e.ends_with("--last-arg"), "{e}");
        assert!(e.contains(" … "), "{e}");
    }

    #[test]
    fn negative_zero() {
        assert_eq!(format!("{:.2}", no_negative_zero(-0.0)), "0.00");
        assert_eq!(no_negative_zero(-1.5), -1.5);
    }
}
