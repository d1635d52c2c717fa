//! The SIP persistence engine (`--pe sip`), as the kernel's `ip_vs_pe_sip`:
//! a persistent UDP service keys its templates by the message's Call-ID
//! as well as by the (masked) client, so the messages of one call go to
//! one real server and another call from the same client socket may go to
//! another.
//!
//! Contract of [`call_id`]: given a UDP payload, returns the value of its
//! `Call-ID` header (the compact form `i` too; names compared without
//! case), found at the start of a header line before the blank line that
//! ends the headers, with blanks allowed around the colon. The value is the
//! RFC 3261 `word ["@" word]`; like the kernel, a value longer than
//! [`MAX_CALL_ID`] bytes, an empty one, or one not followed by CR or LF
//! counts as absent. A datagram without a Call-ID cannot be scheduled by
//! the engine, and the kernel drops it: so does the pipeline (counted as
//! `drop.pe_no_call_id`). Pure, allocation-free, bounded by the payload.

use uvs_fwd::Parsed;

/// The template key ([`uvs_conntrack::TemplateKey::pe`]) of datagram
/// `frame` (parsed as `p`): the digest of its Call-ID, or `None` when it has
/// none (also for anything but a UDP datagram's payload).
pub fn template_key(frame: &[u8], p: &Parsed) -> Option<u64> {
    if p.proto != 17 || !p.has_l4 {
        return None;
    }
    let payload = frame.get(p.payload_off..p.ip_end)?;
    call_id(payload).map(uvs_conntrack::pe_digest)
}

/// Longest Call-ID used (the kernel's `IP_VS_PEDATA_MAXLEN`).
pub const MAX_CALL_ID: usize = 255;

/// A character of RFC 3261's `word`.
fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-.!%*_+`'~()<>:\\\"/[]?{}".contains(&c)
}

/// The Call-ID of SIP message `payload`, if it has a usable one.
pub fn call_id(payload: &[u8]) -> Option<&[u8]> {
    let mut lines = payload.split(|&b| b == b'\n');
    // The start line (request or status line) is no header.
    lines.next()?;
    let mut off = payload.iter().position(|&b| b == b'\n')? + 1;
    for line in lines {
        let start = off;
        off += line.len() + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            // End of the headers: the body is not searched.
            return None;
        }
        let Some(value_at) = header_value(line) else {
            continue;
        };
        let v = &payload[start + value_at..];
        let word = |s: &[u8]| s.iter().take_while(|&&c| is_word(c)).count();
        let mut n = word(v);
        if n > 0 && v.get(n) == Some(&b'@') {
            let d = word(&v[n + 1..]);
            n = if d == 0 { 0 } else { n + 1 + d };
        }
        if n == 0 || n > MAX_CALL_ID || !matches!(v.get(n), Some(b'\r' | b'\n')) {
            return None;
        }
        return Some(&v[..n]);
    }
    None
}

/// Where the value of a `Call-ID:`/`i:` header line starts, relative to
/// the line; `None` for other lines.
fn header_value(line: &[u8]) -> Option<usize> {
    let blank = |c: &u8| *c == b' ' || *c == b'\t';
    let name_len = if line.len() >= 7 && line[..7].eq_ignore_ascii_case(b"call-id") {
        7
    } else if line.first().is_some_and(|c| c.eq_ignore_ascii_case(&b'i')) {
        1
    } else {
        return None;
    };
    let rest = &line[name_len..];
    let sp = rest.iter().take_while(|c| blank(c)).count();
    if rest.get(sp) != Some(&b':') {
        return None;
    }
    let after = &rest[sp + 1..];
    let sp2 = after.iter().take_while(|c| blank(c)).count();
    Some(name_len + sp + 1 + sp2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_long_and_compact_forms() {
        let m = b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP a\r\nCall-ID: a84b4c76e66710@pc33.example.com\r\nCSeq: 1 INVITE\r\n\r\n";
        assert_eq!(call_id(m), Some(&b"a84b4c76e66710@pc33.example.com"[..]));
        let m = b"OPTIONS sip:x SIP/2.0\nfrom: a\ni :  call-2\n\n";
        assert_eq!(call_id(m), Some(&b"call-2"[..]));
        let m = b"SIP/2.0 200 OK\r\nCALL-ID:\tXyZ\r\n\r\n";
        assert_eq!(call_id(m), Some(&b"XyZ"[..]));
    }

    #[test]
    fn refuses_what_the_kernel_refuses() {
        // No Call-ID; only in the body; not at a line start; a value not
        // ended by a line break; empty; too long; a name that only starts
        // like it.
        for m in [
            &b"INVITE x SIP/2.0\r\nVia: a\r\n\r\n"[..],
            b"INVITE x SIP/2.0\r\nVia: a\r\n\r\nCall-ID: body\r\n",
            b"INVITE x SIP/2.0\r\nX-Call-ID: y\r\n\r\n",
            b"INVITE x SIP/2.0\r\nCall-ID: abc",
            b"INVITE x SIP/2.0\r\nCall-ID: \r\n",
            b"INVITE x SIP/2.0\r\nCall-ID: a b\r\n",
            b"INVITE x SIP/2.0\r\nIn-Reply-To: z\r\n",
            b"Call-ID: first-line-only\r\n",
            b"",
        ] {
            assert_eq!(call_id(m), None, "{:?}", String::from_utf8_lossy(m));
        }
        let long = format!("INVITE x SIP/2.0\r\ni: {}\r\n\r\n", "a".repeat(256));
        assert_eq!(call_id(long.as_bytes()), None);
        let max = format!("INVITE x SIP/2.0\r\ni: {}\r\n\r\n", "a".repeat(255));
        assert_eq!(call_id(max.as_bytes()).map(<[u8]>::len), Some(255));
    }

    #[test]
    fn the_first_call_id_counts() {
        let m = b"BYE x SIP/2.0\r\nCall-ID: one\r\ni: two\r\n\r\n";
        assert_eq!(call_id(m), Some(&b"one"[..]));
    }
}
