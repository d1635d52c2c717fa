#!/usr/bin/env bash
# uvs namespace lab: a client, a load balancer and two real servers.
#
#   scripts/lab.sh up   [PREFIX] [--vip-on-lb] [--dr] [--pair]   build the lab
#   scripts/lab.sh down [PREFIX]                 remove exactly what `up` made
#   scripts/lab.sh names [PREFIX]                print the namespace names
#
# PREFIX (default "uvslab") starts every namespace name, so parallel tests
# never collide. Documentation ranges only; no namespace gets a route toward
# the host's network:
#
#   PREFIX-c  (client)  eth0 198.51.100.10/24  2001:db8:c::10/64
#                       routes: 192.0.2.0/24, 2001:db8:f::/64 via the LB
#       |
#   PREFIX-lb (director) c0 198.51.100.1/24 2001:db8:c::1/64 (client side)
#                        s0 203.0.113.1/24  2001:db8:5::1/64 (server side)
#                        ip_forward=1, like a real gateway
#       |
#   PREFIX-sw (switch)  bridge br0 joining the LB and the real servers (one
#                       L2 segment, as direct routing needs)
#       |
#   PREFIX-rs1 / PREFIX-rs2  eth0 203.0.113.11|12/24  2001:db8:5::11|12/64
#                            default route via the LB (NAT replies)
#
# VIPs live in 192.0.2.0/24 and 2001:db8:f::/64 and are routed to the LB;
# with --vip-on-lb the VIP 192.0.2.10 is also assigned to the LB's c0.
#
# --dr sets the lab up for direct routing, as a real DR deployment is: the
# real servers carry the VIPs 192.0.2.10 and 2001:db8:f::10 on `lo` with
# arp_ignore=1 / arp_announce=2 (they accept packets for the VIP but never
# answer ARP for it), and their replies go straight to the client, never
# through the director: the client has a second leg on the server switch
# (eth1 203.0.113.100, 2001:db8:5::100) and the real servers route the
# client's addresses to it.
#
# --pair adds a second director, PREFIX-lb2 (c0 198.51.100.2, 2001:db8:c::2;
# s0 203.0.113.2, 2001:db8:5::2), for connection sync and failover: the
# client then reaches both directors through a second bridge (br1 in
# PREFIX-sw). Routes still point at PREFIX-lb; a takeover test moves the
# client's VIP route and the real servers' default route to lb2.
set -euo pipefail

cmd=${1:-}
P=${2:-uvslab}
[[ "$P" =~ ^[A-Za-z0-9_-]{1,40}$ ]] || { echo "lab.sh: bad prefix '$P'" >&2; exit 2; }
C=$P-c LB=$P-lb SW=$P-sw RS1=$P-rs1 RS2=$P-rs2 LB2=$P-lb2

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

down() {
  # Only the namespaces this prefix names; deleting a namespace removes its
  # veth ends, and processes still inside are the caller's to stop.
  for ns in "$C" "$LB" "$SW" "$RS1" "$RS2" "$LB2"; do
    ip netns del "$ns" 2>/dev/null || true
  done
}

up() {
  local vip_on_lb=$1 dr=$2 pair=$3
  down
  trap 'down' ERR
  local all=("$C" "$LB" "$SW" "$RS1" "$RS2")
  [ "$pair" = 1 ] && all+=("$LB2")
  for ns in "${all[@]}"; do
    ip netns add "$ns"
    nsx "$ns" ip link set lo up
    nsx "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
  done

  # client <-> LB (with --pair: client, LB and LB2 on the switch's br1)
  if [ "$pair" = 1 ]; then
    nsx "$SW" ip link add br1 type bridge
    nsx "$SW" ip link set br1 up
    ip -n "$C" link add eth0 type veth peer name q0 netns "$SW"
    ip -n "$LB" link add c0 type veth peer name q1 netns "$SW"
    ip -n "$LB2" link add c0 type veth peer name q2 netns "$SW"
    for q in q0 q1 q2; do nsx "$SW" ip link set "$q" master br1 up; done
    nsx "$LB2" ip addr add 198.51.100.2/24 dev c0
    nsx "$LB2" ip -6 addr add 2001:db8:c::2/64 dev c0 nodad
    nsx "$LB2" ip link set c0 up
    ip -n "$LB2" link add s0 type veth peer name p9 netns "$SW"
    nsx "$LB2" ip addr add 203.0.113.2/24 dev s0
    nsx "$LB2" ip -6 addr add 2001:db8:5::2/64 dev s0 nodad
    nsx "$LB2" ip link set s0 up
    nsx "$LB2" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
  else
    ip -n "$C" link add eth0 type veth peer name c0 netns "$LB"
  fi
  nsx "$C" ip addr add 198.51.100.10/24 dev eth0
  nsx "$C" ip -6 addr add 2001:db8:c::10/64 dev eth0 nodad
  nsx "$C" ip link set eth0 up
  nsx "$LB" ip addr add 198.51.100.1/24 dev c0
  nsx "$LB" ip -6 addr add 2001:db8:c::1/64 dev c0 nodad
  nsx "$LB" ip link set c0 up
  nsx "$C" ip route add 192.0.2.0/24 via 198.51.100.1
  nsx "$C" ip -6 route add 2001:db8:f::/64 via 2001:db8:c::1
  # Many short connections: reuse TIME_WAIT ports, use a wide port range.
  nsx "$C" sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="10000 65000"

  # switch
  nsx "$SW" ip link add br0 type bridge
  nsx "$SW" ip link set br0 up
  ip -n "$LB" link add s0 type veth peer name p0 netns "$SW"
  nsx "$LB" ip addr add 203.0.113.1/24 dev s0
  nsx "$LB" ip -6 addr add 2001:db8:5::1/64 dev s0 nodad
  nsx "$LB" ip link set s0 up
  nsx "$SW" ip link set p0 master br0 up
  [ "$pair" = 1 ] && nsx "$SW" ip link set p9 master br0 up
  nsx "$LB" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
  if [ "$vip_on_lb" = 1 ]; then
    nsx "$LB" ip addr add 192.0.2.10/32 dev c0
  fi

  local i=1
  for rs in "$RS1" "$RS2"; do
    ip -n "$rs" link add eth0 type veth peer name "p$i" netns "$SW"
    nsx "$rs" ip addr add "203.0.113.1$i/24" dev eth0
    nsx "$rs" ip -6 addr add "2001:db8:5::1$i/64" dev eth0 nodad
    nsx "$rs" ip link set eth0 up
    nsx "$rs" ip route add default via 203.0.113.1
    nsx "$rs" ip -6 route add default via 2001:db8:5::1
    nsx "$SW" ip link set "p$i" master br0 up
    if [ "$dr" = 1 ]; then
      nsx "$rs" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
        net.ipv4.conf.eth0.arp_ignore=1 net.ipv4.conf.eth0.arp_announce=2
      nsx "$rs" ip addr add 192.0.2.10/32 dev lo
      nsx "$rs" ip -6 addr add 2001:db8:f::10/128 dev lo
      nsx "$rs" ip route add 198.51.100.10/32 via 203.0.113.100
      nsx "$rs" ip -6 route add 2001:db8:c::10/128 via 2001:db8:5::100
    fi
    i=$((i + 1))
  done
  if [ "$dr" = 1 ]; then
    ip -n "$C" link add eth1 type veth peer name pc netns "$SW"
    nsx "$C" ip addr add 203.0.113.100/24 dev eth1
    nsx "$C" ip -6 addr add 2001:db8:5::100/64 dev eth1 nodad
    nsx "$C" ip link set eth1 up
    # Replies arrive on eth1 for an address of eth0.
    nsx "$C" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.eth1.rp_filter=0
    nsx "$SW" ip link set pc master br0 up
  fi
  # A new bridge port stays disabled until the kernel sees its carrier
  # (about a second); frames sent meanwhile are lost. Wait (bounded).
  local n
  for n in $(seq 50); do
    nsx "$SW" bridge link show | grep -qv 'state forwarding' || break
    sleep 0.1
  done
  trap - ERR
}

case "$cmd" in
  up)
    shift 2 || true
    vip=0 dr=0 pair=0
    for o in "$@"; do
      case "$o" in
        --vip-on-lb) vip=1 ;;
        --dr) dr=1 ;;
        --pair) pair=1 ;;
        *) echo "lab.sh: unknown option '$o'" >&2; exit 2 ;;
      esac
    done
    up "$vip" "$dr" "$pair" ;;
  down) down ;;
  names) echo "$C $LB $SW $RS1 $RS2" ;;
  *) sed -n '2,9p' "$0" >&2; exit 2 ;;
esac
