//! The control socket's wire format, both directions framed, nothing
//! delimited by a byte value (so no NUL or newline in a word truncates it):
//!
//! * request: the magic `UVS\x01`, a u32 word count, then each word as a
//!   u32 length and its UTF-8 bytes (all integers big-endian). A text that
//!   travels with a command (the `-R` input) is a word of its own. At most
//!   [`MAX_WORDS`] words and [`MAX_REQUEST`] bytes in all; anything larger
//!   or malformed is refused whole before any of it is used.
//! * reply: a sequence of frames, each a kind byte, a u32 length and the
//!   payload: [`KIND_STDOUT`] and [`KIND_STDERR`] carry text in pieces (a
//!   streamed reply sends many), and one [`KIND_STATUS`] frame (one byte,
//!   the exit status) ends it. A reply that ends without one was cut off.

use std::io;

/// The first four bytes of every request (protocol version 1).
pub const MAGIC: [u8; 4] = *b"UVS\x01";
/// Most bytes one request may hold (a `-R` of 1M services fits).
pub const MAX_REQUEST: usize = 64 << 20;
/// Most words one request may hold.
pub const MAX_WORDS: usize = 1 << 16;
/// Most bytes of one reply frame (a streamed reply sends many).
pub const MAX_FRAME: usize = 16 << 20;

/// Reply frame: a piece of standard output.
pub const KIND_STDOUT: u8 = b'o';
/// Reply frame: a piece of standard error.
pub const KIND_STDERR: u8 = b'e';
/// Reply frame: the exit status, last.
pub const KIND_STATUS: u8 = b's';

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("not a uvs control request (protocol 1 expected)")]
    BadMagic,
    #[error("{0} words is more than the {MAX_WORDS} a request may hold")]
    TooManyWords(usize),
    #[error("the request is larger than {MAX_REQUEST} bytes")]
    TooLarge,
    #[error("word {0} is not UTF-8")]
    NotUtf8(usize),
}

/// Encodes a request.
pub fn request(argv: &[String]) -> Vec<u8> {
    let len = 8 + argv.iter().map(|w| 4 + w.len()).sum::<usize>();
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&(argv.len() as u32).to_be_bytes());
    for w in argv {
        b.extend_from_slice(&(w.len() as u32).to_be_bytes());
        b.extend_from_slice(w.as_bytes());
    }
    b
}

fn u32_at(b: &[u8], at: usize) -> Option<usize> {
    b.get(at..at + 4)
        .map(|x| u32::from_be_bytes([x[0], x[1], x[2], x[3]]) as usize)
}

/// Decodes a request from the bytes received so far: `Ok(None)` while it
/// is incomplete, the words once whole. Refuses as soon as the bytes show
/// it cannot be valid (so a client cannot make the daemon buffer more than
/// [`MAX_REQUEST`]). Cost: O(words) per call, called once per read.
pub fn decode_request(b: &[u8]) -> Result<Option<Vec<String>>, WireError> {
    if b.len() >= 4 && b[..4] != MAGIC {
        return Err(WireError::BadMagic);
    }
    if b.len() > MAX_REQUEST {
        return Err(WireError::TooLarge);
    }
    let Some(n) = u32_at(b, 4) else {
        return Ok(None);
    };
    if n > MAX_WORDS {
        return Err(WireError::TooManyWords(n));
    }
    let mut at = 8;
    let mut spans = Vec::with_capacity(n);
    for _ in 0..n {
        let Some(len) = u32_at(b, at) else {
            return Ok(None);
        };
        at += 4;
        if at + len > MAX_REQUEST {
            return Err(WireError::TooLarge);
        }
        if b.len() < at + len {
            return Ok(None);
        }
        spans.push(at..at + len);
        at += len;
    }
    spans
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            std::str::from_utf8(&b[r])
                .map(str::to_owned)
                .map_err(|_| WireError::NotUtf8(i))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Appends one reply frame to `out`; a payload larger than [`MAX_FRAME`]
/// becomes several frames of the same kind.
pub fn push_frame(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let mut rest = payload;
    loop {
        let (now, later) = rest.split_at(rest.len().min(MAX_FRAME));
        out.push(kind);
        out.extend_from_slice(&(now.len() as u32).to_be_bytes());
        out.extend_from_slice(now);
        rest = later;
        if rest.is_empty() {
            return;
        }
    }
}

/// Reads one reply frame: its kind and payload.
pub fn read_frame(r: &mut impl io::Read, buf: &mut Vec<u8>) -> io::Result<u8> {
    let mut h = [0u8; 5];
    r.read_exact(&mut h)?;
    let n = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
    if n > MAX_FRAME {
        return Err(io::Error::other(format!(
            "control reply frame of {n} bytes is too large"
        )));
    }
    buf.clear();
    buf.resize(n, 0);
    r.read_exact(buf)?;
    Ok(h[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn words_round_trip_with_nul_and_newline_inside() {
        let argv = words(&["uvsadm-restore", "-A -t 1.2.3.4:80\n\0-C\n", ""]);
        let b = request(&argv);
        assert_eq!(decode_request(&b), Ok(Some(argv)));
        for cut in 0..b.len() {
            assert_eq!(decode_request(&b[..cut]), Ok(None), "prefix {cut}");
        }
    }

    #[test]
    fn bad_requests_are_refused_early() {
        assert_eq!(decode_request(b"GET /"), Err(WireError::BadMagic));
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decode_request(&b),
            Err(WireError::TooManyWords(_))
        ));
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&1u32.to_be_bytes());
        b.extend_from_slice(&(MAX_REQUEST as u32).to_be_bytes());
        assert_eq!(decode_request(&b), Err(WireError::TooLarge));
        let mut b = request(&words(&["x"]));
        *b.last_mut().unwrap() = 0xff;
        assert_eq!(decode_request(&b), Err(WireError::NotUtf8(0)));
    }

    #[test]
    fn frames_round_trip() {
        let mut out = Vec::new();
        push_frame(&mut out, KIND_STDOUT, b"a\0b");
        push_frame(&mut out, KIND_STATUS, &[3]);
        let mut r = &out[..];
        let mut buf = Vec::new();
        assert_eq!(read_frame(&mut r, &mut buf).unwrap(), KIND_STDOUT);
        assert_eq!(buf, b"a\0b");
        assert_eq!(read_frame(&mut r, &mut buf).unwrap(), KIND_STATUS);
        assert_eq!(buf, [3]);
    }
}
