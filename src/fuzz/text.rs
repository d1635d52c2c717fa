//! Text targets: the uvsadm command line (words and `-R` text), the filter
//! rules parser, and the control socket's framing.
//!
//! The filter target covers `datapath::filter` (`uvs filter` rules and
//! `--filter` files). The iptables-save tables parser another change brings
//! gets its own target once merged: the same shape as [`filter`] (parse,
//! print, parse again), in this file.

use crate::control::ctl;
use crate::datapath::filter::{FilterTable, Rule};

/// `ctl`: the first byte picks words (the rest split at NUL bytes, as the
/// control socket carries argv) or `-R` text. Parsing is deterministic and
/// never panics; a script's line numbers are its own.
pub fn ctl(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    if sel & 1 == 0 {
        let argv: Vec<String> = std::iter::once("uvsadm")
            .chain(text.split('\0'))
            .map(String::from)
            .collect();
        let a = ctl::parse(&argv);
        assert_eq!(a, ctl::parse(&argv), "deterministic");
        if let Ok(cmd) = a {
            let _ = format!("{cmd:?}");
        }
    } else {
        let lines = text.lines().count();
        match ctl::parse_script(&text) {
            Ok(cmds) => {
                let mut last = 0;
                for (n, _) in &cmds {
                    assert!(*n > last && *n <= lines, "line {n} of {lines}");
                    last = *n;
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
}

/// `filter`: every line through [`Rule::parse`]; an accepted rule prints
/// as text that parses back to the same rule. The whole text through
/// [`FilterTable::parse_file`] and its listing.
pub fn filter(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        if let Ok(r) = Rule::parse(line) {
            let printed = r.to_string();
            let again = Rule::parse(&printed)
                .unwrap_or_else(|e| panic!("{printed:?} (from {line:?}) does not parse: {e}"));
            assert_eq!(again, r, "{line:?} printed as {printed:?}");
        }
    }
    if let Ok(t) = FilterTable::parse_file(&text) {
        let _ = t.listing();
    }
}

/// `ctl_frame`: the control socket's request decoder over a byte stream
/// (frames back to back, as a client may send them), each request's words
/// through the command parser. The decoder never panics, never reads past
/// the input, and refuses what is too large before allocating it.
pub fn ctl_frame(data: &[u8]) {
    let mut r = data;
    for _ in 0..64 {
        let before = r.len();
        let Ok(frame) = crate::control::socket::read_frame(&mut r) else {
            return;
        };
        assert_eq!(
            before - r.len(),
            4 + frame.len(),
            "a frame is its prefix and body"
        );
        let words = String::from_utf8_lossy(&frame);
        let argv: Vec<String> = words.split('\0').map(String::from).collect();
        let _ = ctl::parse(&argv);
    }
}
