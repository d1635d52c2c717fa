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

/// `tables`: the iptables-save parser of the emulated tables
/// (`datapath::tables::parse_with`), after the ipset parser: the text
/// before the first line that starts with `*` is `ipset save` text
/// (`datapath::tables::ipset::restore`). Neither panics; a text either
/// accepts saves to a text that parses again and saves the same (a fixed
/// point).
pub fn tables(data: &[u8]) {
    use crate::datapath::tables::ipset;
    let text = String::from_utf8_lossy(data);
    let split = text
        .match_indices('*')
        .find(|(i, _)| *i == 0 || text.as_bytes()[i - 1] == b'\n')
        .map_or(text.len(), |(i, _)| i);
    let (sets_text, tables_text) = text.split_at(split);
    let none = |_: u32| 0;
    let sets = match ipset::restore(&ipset::Sets::default(), &none, sets_text, false) {
        Ok(sets) => {
            let saved = ipset::save(&sets, None);
            let again = ipset::restore(&ipset::Sets::default(), &none, &saved, false)
                .unwrap_or_else(|e| panic!("saved sets do not restore ({e}):\n{saved}"));
            assert_eq!(
                ipset::save(&again, None),
                saved,
                "ipset save is not a fixed point"
            );
            sets
        }
        Err(_) => ipset::Sets::default(),
    };
    let Ok(r) = crate::datapath::tables::parse_with(tables_text, &sets) else {
        return;
    };
    let saved = r.save(false);
    let again = crate::datapath::tables::parse_with(&saved, &sets)
        .unwrap_or_else(|e| panic!("saved text does not parse ({e}):\n{saved}"));
    assert_eq!(again.save(false), saved, "save is not a fixed point");
}

/// `ctl_frame`: the control socket's wire format (`control/socket/wire.rs`).
/// The request decoder is fed growing prefixes, as bytes arrive: it never
/// panics and never asks for more than a whole request; a whole request
/// re-encodes to bytes that decode to the same words, which then go
/// through the command parser. The reply-frame reader runs over the same
/// bytes and refuses oversized frames before allocating them.
pub fn ctl_frame(data: &[u8]) {
    use crate::control::socket::wire;
    let mut whole = None;
    for end in [data.len() / 4, data.len() / 2, data.len()] {
        match wire::decode_request(&data[..end]) {
            Ok(Some(words)) => {
                whole = Some(words);
                break;
            }
            Ok(None) => {}
            Err(_) => break,
        }
    }
    if let Some(argv) = whole {
        let again = wire::decode_request(&wire::request(&argv));
        assert!(
            matches!(&again, Ok(Some(w)) if *w == argv),
            "{argv:?} re-encoded decodes as {again:?}"
        );
        let _ = ctl::parse(&argv);
    }
    let (mut r, mut buf) = (data, Vec::new());
    for _ in 0..64 {
        if wire::read_frame(&mut r, &mut buf).is_err() {
            break;
        }
    }
}
