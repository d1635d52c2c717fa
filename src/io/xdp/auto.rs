//! `--io auto`: whether to try AF_XDP on these interfaces, and if not, why.
//!
//! AF_XDP where every interface takes the steering program natively, except
//! on a veth. A native XDP program on a veth turns its peer's TSO/GSO off
//! (the kernel's `veth_xdp_set` drops `NETIF_F_GSO_SOFTWARE` from the
//! peer's features, frags-aware program or not), so every TCP stream sent
//! into uvs's veth arrives cut into MTU-sized segments, and uvs forwards
//! each: one stream ran at a fraction of what AF_PACKET gets from 64 KiB
//! super-packets (`uvs bench`, README *AF_XDP*). An operator on veth
//! (containers, the lab) expects `auto` not to cost them that, so auto runs
//! AF_PACKET there and says why at start-up; `--io af_xdp` (native) and
//! `--io af_xdp_generic` (generic XDP, the peer's GSO kept) stay one word
//! away. Every other interface that takes the program natively gets AF_XDP;
//! one that does not gets AF_PACKET with the attach error as the reason.

use crate::sys::netlink::Netlink;

/// Why `--io auto` should not try AF_XDP on `ifaces` (name, kind as
/// `IFLA_INFO_KIND` says), or `None` to try it.
pub fn declines(ifaces: &[(&str, Option<&str>)]) -> Option<String> {
    let veths: Vec<&str> = ifaces
        .iter()
        .filter(|(_, k)| *k == Some("veth"))
        .map(|(n, _)| *n)
        .collect();
    if veths.is_empty() {
        return None;
    }
    Some(format!(
        "--io auto: {} {}, where native XDP turns off the peer's GSO \
         and a TCP stream would cross in MTU-sized segments; \
         --io af_xdp or af_xdp_generic to run AF_XDP anyway",
        veths.join(", "),
        if veths.len() == 1 {
            "is a veth"
        } else {
            "are veths"
        },
    ))
}

/// [`declines`] for interfaces (name, index) of the calling thread's
/// namespace, their kinds read over rtnetlink. An interface whose kind
/// cannot be read counts as a physical one (AF_XDP is tried, and its
/// attach error, if any, is the reason given).
pub fn declines_on(ifaces: &[(String, u32)]) -> Option<String> {
    let mut nl = Netlink::open().ok();
    let kinds: Vec<(String, Option<String>)> = ifaces
        .iter()
        .map(|(name, index)| {
            let kind = nl
                .as_mut()
                .and_then(|nl| nl.link(*index).ok())
                .and_then(|l| l.kind);
            (name.clone(), kind)
        })
        .collect();
    let view: Vec<(&str, Option<&str>)> = kinds
        .iter()
        .map(|(n, k)| (n.as_str(), k.as_deref()))
        .collect();
    declines(&view)
}

#[cfg(test)]
mod tests {
    use super::declines;

    #[test]
    fn auto_declines_veth_only_and_names_every_one() {
        assert_eq!(declines(&[("eth0", None), ("eth1", None)]), None);
        assert_eq!(declines(&[("br0", Some("bridge"))]), None, "attach decides");
        let why = declines(&[("eth0", None), ("c0", Some("veth"))]).expect("declined");
        assert!(why.starts_with("--io auto: c0 is a veth"), "{why}");
        assert!(why.contains("GSO") && why.contains("--io af_xdp"), "{why}");
        let why = declines(&[("c0", Some("veth")), ("s0", Some("veth"))]).expect("declined");
        assert!(why.starts_with("--io auto: c0, s0 are veths"), "{why}");
    }
}
