//! A [`Record`] as the kernel's LOG target prints the packet (the field
//! order and spelling of the kernel's syslog logger): `IN= OUT= MAC= SRC=
//! DST= LEN= TOS= PREC= TTL= ID= [CE] [DF] [MF] [FRAG:] [OPT (…)] PROTO=…`
//! for IPv4, `SRC= DST= LEN= TC= HOPLIMIT= FLOWLBL= [FRAG: ID:] PROTO=…` for
//! IPv6; TCP `SPT= DPT= [SEQ= ACK=] WINDOW= RES= <flags> URGP= [OPT (…)]`,
//! UDP `SPT= DPT= LEN=`, ICMP `TYPE= CODE=` (+ `ID= SEQ=` for echo, the
//! quoted packet in brackets for errors, `MTU=`), then `MARK=` when the
//! packet has one. Each field ends with a space, as the kernel's do.
//! Runs on the drain thread only.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::{flag, Record};

/// Appends `r`'s line (with its newline) to `out`. `base_us` is the
/// monotonic time, in microseconds, of the records' clock's zero.
pub fn line(r: &Record, base_us: u64, out: &mut String) {
    let t = base_us + r.now_ms * 1000;
    let _ = write!(
        out,
        "<{}>[{:>5}.{:06}] {}IN={} OUT={} ",
        r.spec.level,
        t / 1_000_000,
        t % 1_000_000,
        r.spec.prefix(),
        name(&r.in_name),
        name(&r.out_name)
    );
    if r.has_mac {
        mac(r, out);
    }
    let ip = &r.ip[..r.ip_len as usize];
    packet(ip, r.spec.flags, true, out);
    if r.mark != 0 {
        let _ = write!(out, "MARK=0x{:x} ", r.mark);
    }
    out.push('\n');
}

/// Just the packet's fields (no level, time, prefix or interfaces): what
/// follows `MAC=` in a line.
pub fn fields(ip: &[u8], flags: u8) -> String {
    let mut s = String::new();
    packet(ip, flags, true, &mut s);
    s
}

fn name(n: &[u8; 16]) -> &str {
    let l = n.iter().position(|&b| b == 0).unwrap_or(16);
    std::str::from_utf8(&n[..l]).unwrap_or("?")
}

fn mac(r: &Record, out: &mut String) {
    let m = &r.mac;
    if r.spec.flags & flag::MACDECODE != 0 {
        let hw = |b: &[u8]| {
            b.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        let _ = write!(
            out,
            "MACSRC={} MACDST={} MACPROTO={:04x} ",
            hw(&m[6..12]),
            hw(&m[..6]),
            u16::from_be_bytes([m[12], m[13]])
        );
        return;
    }
    out.push_str("MAC=");
    for (i, b) in m.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{b:02x}");
    }
    out.push(' ');
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn hex_upper(b: &[u8], out: &mut String) {
    for x in b {
        let _ = write!(out, "{x:02X}");
    }
}

/// The IP packet `b` (maybe cut short); `outer` is false inside an ICMP
/// error's brackets, where no second level is quoted.
fn packet(b: &[u8], flags: u8, outer: bool, out: &mut String) {
    match b.first().map(|v| v >> 4) {
        Some(4) => ipv4(b, flags, outer, out),
        Some(6) => ipv6(b, flags, outer, out),
        _ => out.push_str("TRUNCATED "),
    }
}

fn ipv4(b: &[u8], flags: u8, outer: bool, out: &mut String) {
    if b.len() < 20 {
        out.push_str("TRUNCATED ");
        return;
    }
    let ihl = usize::from(b[0] & 0x0f) * 4;
    let tos = b[1];
    let frag = be16(b, 6);
    let _ = write!(
        out,
        "SRC={} DST={} LEN={} TOS=0x{:02X} PREC=0x{:02X} TTL={} ID={} ",
        Ipv4Addr::new(b[12], b[13], b[14], b[15]),
        Ipv4Addr::new(b[16], b[17], b[18], b[19]),
        be16(b, 2),
        tos & 0x1e,
        tos & 0xe0,
        b[8],
        be16(b, 4)
    );
    if frag & 0x8000 != 0 {
        out.push_str("CE ");
    }
    if frag & 0x4000 != 0 {
        out.push_str("DF ");
    }
    if frag & 0x2000 != 0 {
        out.push_str("MF ");
    }
    let offset = frag & 0x1fff;
    if offset != 0 {
        let _ = write!(out, "FRAG:{offset} ");
    }
    if flags & flag::IP_OPTIONS != 0 && ihl > 20 {
        let Some(o) = b.get(20..ihl) else {
            out.push_str("TRUNCATED ");
            return;
        };
        out.push_str("OPT (");
        hex_upper(o, out);
        out.push_str(") ");
    }
    let l4 = b.get(ihl.max(20)..).unwrap_or(&[]);
    let fragment = offset != 0;
    match b[9] {
        6 => tcp(l4, fragment, flags, out),
        17 => udp("UDP", l4, fragment, out),
        136 => udp("UDPLITE", l4, fragment, out),
        132 => sctp(l4, fragment, out),
        1 => icmp(l4, fragment, flags, outer, out),
        p => {
            let _ = write!(out, "PROTO={p} ");
        }
    }
}

fn incomplete(l4: &[u8], out: &mut String) {
    let _ = write!(out, "INCOMPLETE [{} bytes] ", l4.len());
}

fn tcp(l4: &[u8], fragment: bool, flags: u8, out: &mut String) {
    out.push_str("PROTO=TCP ");
    if fragment {
        return;
    }
    if l4.len() < 20 {
        return incomplete(l4, out);
    }
    let _ = write!(out, "SPT={} DPT={} ", be16(l4, 0), be16(l4, 2));
    if flags & flag::TCP_SEQUENCE != 0 {
        let _ = write!(out, "SEQ={} ACK={} ", be32(l4, 4), be32(l4, 8));
    }
    let _ = write!(
        out,
        "WINDOW={} RES=0x{:02x} ",
        be16(l4, 14),
        (l4[12] & 0x0f) << 2
    );
    let f = l4[13];
    for (bit, n) in [
        (0x80, "CWR "),
        (0x40, "ECE "),
        (0x20, "URG "),
        (0x10, "ACK "),
        (0x08, "PSH "),
        (0x04, "RST "),
        (0x02, "SYN "),
        (0x01, "FIN "),
    ] {
        if f & bit != 0 {
            out.push_str(n);
        }
    }
    let _ = write!(out, "URGP={} ", be16(l4, 18));
    let doff = usize::from(l4[12] >> 4) * 4;
    if flags & flag::TCP_OPTIONS != 0 && doff > 20 {
        let Some(o) = l4.get(20..doff) else {
            out.push_str("TRUNCATED ");
            return;
        };
        out.push_str("OPT (");
        hex_upper(o, out);
        out.push_str(") ");
    }
}

fn udp(name: &str, l4: &[u8], fragment: bool, out: &mut String) {
    let _ = write!(out, "PROTO={name} ");
    if fragment {
        return;
    }
    if l4.len() < 8 {
        return incomplete(l4, out);
    }
    let _ = write!(
        out,
        "SPT={} DPT={} LEN={} ",
        be16(l4, 0),
        be16(l4, 2),
        be16(l4, 4)
    );
}

fn sctp(l4: &[u8], fragment: bool, out: &mut String) {
    out.push_str("PROTO=SCTP ");
    if fragment {
        return;
    }
    if l4.len() < 4 {
        return incomplete(l4, out);
    }
    let _ = write!(out, "SPT={} DPT={} ", be16(l4, 0), be16(l4, 2));
}

fn icmp(l4: &[u8], fragment: bool, flags: u8, outer: bool, out: &mut String) {
    out.push_str("PROTO=ICMP ");
    if fragment {
        return;
    }
    if l4.len() < 4 {
        return incomplete(l4, out);
    }
    let (ty, code) = (l4[0], l4[1]);
    let _ = write!(out, "TYPE={ty} CODE={code} ");
    // What each type needs before its fields are printed.
    let need = match ty {
        0 | 8 => 8,
        3 | 4 | 5 | 11 | 12 => 8 + 20,
        13 | 14 => 20,
        17 | 18 => 12,
        _ => 0,
    };
    if l4.len() < need {
        return incomplete(l4, out);
    }
    match ty {
        0 | 8 => {
            let _ = write!(out, "ID={} SEQ={} ", be16(l4, 4), be16(l4, 6));
        }
        12 => {
            let _ = write!(out, "PARAMETER={} ", l4[4]);
        }
        3 | 4 | 5 | 11 => {
            if ty == 5 {
                let _ = write!(
                    out,
                    "GATEWAY={} ",
                    Ipv4Addr::new(l4[4], l4[5], l4[6], l4[7])
                );
            }
            if outer {
                out.push('[');
                ipv4(&l4[8..], flags, false, out);
                out.push_str("] ");
            }
            if ty == 3 && code == 4 {
                let _ = write!(out, "MTU={} ", be16(l4, 6));
            }
        }
        _ => {}
    }
}

fn v6(b: &[u8], at: usize) -> String {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    // The kernel's full form: eight groups of four hex digits.
    Ipv6Addr::from(a)
        .segments()
        .iter()
        .map(|s| format!("{s:04x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn ipv6(b: &[u8], flags: u8, outer: bool, out: &mut String) {
    if b.len() < 40 {
        out.push_str("TRUNCATED ");
        return;
    }
    let w0 = be32(b, 0);
    let _ = write!(
        out,
        "SRC={} DST={} LEN={} TC={} HOPLIMIT={} FLOWLBL={} ",
        v6(b, 8),
        v6(b, 24),
        usize::from(be16(b, 4)) + 40,
        (w0 >> 20) & 0xff,
        b[7],
        w0 & 0x000f_ffff
    );
    let opt = flags & flag::IP_OPTIONS != 0;
    let (mut next, mut off, mut fragment) = (b[6], 40usize, false);
    // Extension headers, as far as the capture reaches.
    while matches!(next, 0 | 43 | 44 | 50 | 51 | 59 | 60) {
        let Some(h) = b.get(off..off + 8) else {
            out.push_str("TRUNCATED ");
            return;
        };
        if opt {
            out.push_str("OPT ( ");
        }
        let len = match next {
            44 => {
                let fo = be16(h, 2);
                let _ = write!(out, "FRAG:{} ", fo & 0xfff8);
                if fo & 1 != 0 {
                    out.push_str("INCOMPLETE ");
                }
                let _ = write!(out, "ID:{:08x} ", be32(h, 4));
                fragment = fo & 0xfff8 != 0;
                8
            }
            0 | 43 | 60 => {
                if fragment {
                    if opt {
                        out.push(')');
                    }
                    return;
                }
                (usize::from(h[1]) + 1) * 8
            }
            51 => {
                if opt {
                    let _ = write!(out, "AH SPI=0x{:x} ", be32(h, 4));
                }
                (usize::from(h[1]) + 2) * 4
            }
            50 => {
                if opt {
                    let _ = write!(out, "ESP SPI=0x{:x} )", be32(h, 0));
                }
                return;
            }
            n => {
                let _ = write!(out, "Unknown Ext Hdr {n}");
                return;
            }
        };
        if opt {
            out.push_str(") ");
        }
        next = h[0];
        off += len;
    }
    let l4 = b.get(off..).unwrap_or(&[]);
    match next {
        6 => tcp(l4, fragment, flags, out),
        17 => udp("UDP", l4, fragment, out),
        136 => udp("UDPLITE", l4, fragment, out),
        132 => sctp(l4, fragment, out),
        58 => icmp6(l4, fragment, flags, outer, out),
        p => {
            let _ = write!(out, "PROTO={p} ");
        }
    }
}

fn icmp6(l4: &[u8], fragment: bool, flags: u8, outer: bool, out: &mut String) {
    out.push_str("PROTO=ICMPv6 ");
    if fragment {
        return;
    }
    if l4.len() < 8 {
        return incomplete(l4, out);
    }
    let ty = l4[0];
    let _ = write!(out, "TYPE={} CODE={} ", ty, l4[1]);
    match ty {
        128 | 129 => {
            let _ = write!(out, "ID={} SEQ={} ", be16(l4, 4), be16(l4, 6));
        }
        1..=4 => {
            if ty == 4 {
                let _ = write!(out, "POINTER={:08x} ", be32(l4, 4));
            }
            if outer {
                out.push('[');
                ipv6(&l4[8..], flags, false, out);
                out.push_str("] ");
            }
            if ty == 2 {
                let _ = write!(out, "MTU={} ", be32(l4, 4));
            }
        }
        _ => {}
    }
}
