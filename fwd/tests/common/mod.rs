//! Helpers shared by the integration tests: an independent, naive checksum
//! (16-bit words, RFC 1071 loop, written without `uvs_fwd::checksum`) used to
//! cross-check what the crate computes, and hex conversion.

#![allow(dead_code)]

/// Naive ones'-complement sum of 16-bit big-endian words, folded each step.
pub fn naive_sum(data: &[u8], mut acc: u32) -> u32 {
    let mut i = 0;
    while i < data.len() {
        let hi = u32::from(data[i]);
        let lo = if i + 1 < data.len() {
            u32::from(data[i + 1])
        } else {
            0
        };
        acc += (hi << 8) | lo;
        acc = (acc & 0xffff) + (acc >> 16);
        i += 2;
    }
    acc
}

/// Finds the L3 offset by hand (up to two VLAN tags).
pub fn l3_off(f: &[u8]) -> usize {
    let mut off = 12;
    while matches!(u16::from_be_bytes([f[off], f[off + 1]]), 0x8100 | 0x88a8) {
        off += 4;
    }
    off + 2
}

/// Independently verifies a frame's checksums: IPv4 header (if v4) and the
/// TCP/UDP/ICMPv6 checksum over pseudo-header + segment. Only for simple
/// frames: no IPv6 extension headers, not fragmented. UDP/IPv4 checksum 0 passes.
pub fn naive_verify(f: &[u8]) -> bool {
    let l3 = l3_off(f);
    let v4 = f[l3] >> 4 == 4;
    let (proto, l4, end, pseudo) = if v4 {
        let hl = usize::from(f[l3] & 15) * 4;
        if naive_sum(&f[l3..l3 + hl], 0) != 0xffff {
            return false;
        }
        let end = l3 + usize::from(u16::from_be_bytes([f[l3 + 2], f[l3 + 3]]));
        let proto = f[l3 + 9];
        let len = (end - l3 - hl) as u32;
        let mut acc = naive_sum(&f[l3 + 12..l3 + 20], 0);
        acc = naive_sum(&[0, proto, (len >> 8) as u8, len as u8], acc);
        (proto, l3 + hl, end, acc)
    } else {
        let end = l3 + 40 + usize::from(u16::from_be_bytes([f[l3 + 4], f[l3 + 5]]));
        let proto = f[l3 + 6];
        let len = (end - l3 - 40) as u32;
        let mut acc = naive_sum(&f[l3 + 8..l3 + 40], 0);
        acc = naive_sum(&[0, 0, (len >> 8) as u8, len as u8, 0, 0, 0, proto], acc);
        (proto, l3 + 40, end, acc)
    };
    match proto {
        6 | 17 | 58 => {
            if proto == 17 && v4 && f[l4 + 6] == 0 && f[l4 + 7] == 0 {
                return true;
            }
            naive_sum(&f[l4..end], pseudo) == 0xffff
        }
        1 => naive_sum(&f[l4..end], 0) == 0xffff,
        _ => true,
    }
}

/// Completes a CHECKSUM_PARTIAL frame the way a NIC does: sum the L4 bytes
/// from the checksum start with the field holding the pseudo-header sum, and
/// store the complement. Simple frames only (as [`naive_verify`]).
pub fn nic_complete(f: &mut [u8]) {
    let l3 = l3_off(f);
    let (proto, l4, end) = if f[l3] >> 4 == 4 {
        let hl = usize::from(f[l3] & 15) * 4;
        (
            f[l3 + 9],
            l3 + hl,
            l3 + usize::from(u16::from_be_bytes([f[l3 + 2], f[l3 + 3]])),
        )
    } else {
        (
            f[l3 + 6],
            l3 + 40,
            l3 + 40 + usize::from(u16::from_be_bytes([f[l3 + 4], f[l3 + 5]])),
        )
    };
    let off = match proto {
        6 => 16,
        17 => 6,
        _ => return,
    };
    let mut c = !(naive_sum(&f[l4..end], 0) as u16);
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    f[l4 + off..l4 + off + 2].copy_from_slice(&c.to_be_bytes());
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Parses hex, ignoring whitespace.
pub fn unhex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|p| {
            u8::from_str_radix(std::str::from_utf8(p).expect("ascii hex"), 16).expect("hex digit")
        })
        .collect()
}

/// Bitwise CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), no table:
/// an independent reference for the crate's table-driven one.
pub fn naive_crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let lsb = crc & 1;
            crc >>= 1;
            if lsb != 0 {
                crc ^= 0x82f6_3b78;
            }
        }
    }
    !crc
}

/// Checks the SCTP CRC-32C of a simple (untagged, option-less) frame: the
/// CRC over the SCTP packet with the field zeroed, stored little-endian.
pub fn naive_sctp_crc_ok(f: &[u8]) -> bool {
    let l3 = l3_off(f);
    let (l4, end) = if f[l3] >> 4 == 4 {
        let hl = usize::from(f[l3] & 15) * 4;
        (
            l3 + hl,
            l3 + usize::from(u16::from_be_bytes([f[l3 + 2], f[l3 + 3]])),
        )
    } else {
        (
            l3 + 40,
            l3 + 40 + usize::from(u16::from_be_bytes([f[l3 + 4], f[l3 + 5]])),
        )
    };
    let mut seg = f[l4..end].to_vec();
    let stored = u32::from_le_bytes([seg[8], seg[9], seg[10], seg[11]]);
    seg[8..12].fill(0);
    naive_crc32c(&seg) == stored
}
