#!/usr/bin/env bash
# uvs namespace lab: a client, a load balancer and two real servers.
#
#   scripts/lab.sh up   [PREFIX] [--vip-on-lb] [--dr] [--pair]   build the lab
#   scripts/lab.sh up   [PREFIX] --ecmp [N]      a router and N directors
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
#
# --ecmp [N] (N = 2..8, default 2) builds another topology instead: N
# directors behind a router that spreads flows over them by ECMP, the VIPs
# learnt over BGP from each director (BIRD 2 on the router, started here;
# the directors' BIRD is uvs's, `uvs run --bgp-peer`). IPv4 only:
#
#   PREFIX-c   (client)  eth0 198.51.100.10/25, 192.0.2.0/24 via the router
#       |
#   PREFIX-r   (router)  c0 198.51.100.1/25 (client side)
#                        f0 198.51.100.129/25 (front: BGP, ECMP next hops)
#                        s0 203.0.113.254/24 (server side: DR replies)
#                        ip_forward=1, fib_multipath_hash_policy=1 (L4
#                        hash), rp_filter=0 (replies from the VIP arrive on
#                        s0 while the VIP's route points at f0); BIRD 2, AS
#                        65000, one eBGP session per director (hold time 3,
#                        keepalive 1), `merge paths` into the kernel, so the
#                        route to a VIP has one next hop per director
#       |  br1 in PREFIX-sw
#   PREFIX-lb1 … PREFIX-lbN (directors, AS 65010)
#                        c0 198.51.100.(129+K)/25, s0 203.0.113.K/24
#       |  br0 in PREFIX-sw
#   PREFIX-rs1 / PREFIX-rs2  eth0 203.0.113.11|12/24, default via the
#                        router's 203.0.113.254; the VIPs 192.0.2.10 and
#                        192.0.2.20 on lo with arp_ignore=1/arp_announce=2
#                        (direct routing: replies go through the router)
#
# The router's BIRD files (bird.conf, bird.ctl, bird.pid, bird.log) live in
# /run/uvs-lab/PREFIX-r/; `down` stops that BIRD by its PID file and removes
# the directory.
set -euo pipefail

cmd=${1:-}
P=${2:-uvslab}
[[ "$P" =~ ^[A-Za-z0-9_-]{1,40}$ ]] || { echo "lab.sh: bad prefix '$P'" >&2; exit 2; }
C=$P-c LB=$P-lb SW=$P-sw RS1=$P-rs1 RS2=$P-rs2 LB2=$P-lb2
R=$P-r RDIR=/run/uvs-lab/$P-r

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

down() {
  # The router's BIRD (--ecmp): the one this script started, by its PID.
  if [ -f "$RDIR/bird.pid" ]; then
    local pid
    pid=$(cat "$RDIR/bird.pid" 2>/dev/null || true)
    if [[ "$pid" =~ ^[0-9]+$ ]] && [ "$(ip netns identify "$pid" 2>/dev/null)" = "$R" ]; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -rf "$RDIR"
  # Only the namespaces this prefix names; deleting a namespace removes its
  # veth ends, and processes still inside are the caller's to stop.
  local k
  for ns in "$C" "$LB" "$SW" "$RS1" "$RS2" "$LB2" "$R"; do
    ip netns del "$ns" 2>/dev/null || true
  done
  for k in 1 2 3 4 5 6 7 8; do
    ip netns del "$P-lb$k" 2>/dev/null || true
  done
}

# Waits (bounded) until every port of the switch's bridges forwards: a new
# port stays disabled until the kernel sees its carrier (about a second).
wait_bridges() {
  local n
  for n in $(seq 50); do
    nsx "$SW" bridge link show | grep -qv 'state forwarding' || break
    sleep 0.1
  done
}

up_ecmp() {
  local n=$1 k
  command -v bird >/dev/null || { echo "lab.sh: --ecmp needs BIRD 2's bird (Debian package bird2)" >&2; exit 1; }
  down
  trap 'down' ERR
  local all=("$C" "$R" "$SW" "$RS1" "$RS2")
  for k in $(seq "$n"); do all+=("$P-lb$k"); done
  for ns in "${all[@]}"; do
    ip netns add "$ns"
    nsx "$ns" ip link set lo up
  done
  nsx "$SW" ip link add br0 type bridge
  nsx "$SW" ip link add br1 type bridge
  nsx "$SW" ip link set br0 up
  nsx "$SW" ip link set br1 up

  # client <-> router
  ip -n "$C" link add eth0 type veth peer name c0 netns "$R"
  nsx "$C" ip addr add 198.51.100.10/25 dev eth0
  nsx "$C" ip link set eth0 up
  nsx "$C" ip route add 192.0.2.0/24 via 198.51.100.1
  nsx "$C" sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="10000 65000"
  nsx "$R" ip addr add 198.51.100.1/25 dev c0
  nsx "$R" ip link set c0 up
  # router's front (br1) and server-side (br0) legs
  ip -n "$R" link add f0 type veth peer name rf netns "$SW"
  ip -n "$R" link add s0 type veth peer name rs netns "$SW"
  nsx "$R" ip addr add 198.51.100.129/25 dev f0
  nsx "$R" ip addr add 203.0.113.254/24 dev s0
  nsx "$R" ip link set f0 up
  nsx "$R" ip link set s0 up
  nsx "$SW" ip link set rf master br1 up
  nsx "$SW" ip link set rs master br0 up
  nsx "$R" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1 \
    net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
    net.ipv4.conf.s0.rp_filter=0 net.ipv4.conf.f0.rp_filter=0

  # directors
  for k in $(seq "$n"); do
    local d=$P-lb$k
    ip -n "$d" link add c0 type veth peer name "f$k" netns "$SW"
    ip -n "$d" link add s0 type veth peer name "d$k" netns "$SW"
    nsx "$d" ip addr add "198.51.100.$((129 + k))/25" dev c0
    nsx "$d" ip addr add "203.0.113.$k/24" dev s0
    nsx "$d" ip link set c0 up
    nsx "$d" ip link set s0 up
    nsx "$d" sysctl -qw net.ipv4.ip_forward=1
    nsx "$SW" ip link set "f$k" master br1 up
    nsx "$SW" ip link set "d$k" master br0 up
  done

  # real servers (direct routing)
  local i=1
  for rs in "$RS1" "$RS2"; do
    ip -n "$rs" link add eth0 type veth peer name "p$i" netns "$SW"
    nsx "$rs" ip addr add "203.0.113.1$i/24" dev eth0
    nsx "$rs" ip link set eth0 up
    nsx "$rs" ip route add default via 203.0.113.254
    nsx "$rs" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
      net.ipv4.conf.eth0.arp_ignore=1 net.ipv4.conf.eth0.arp_announce=2
    nsx "$rs" ip addr add 192.0.2.10/32 dev lo
    nsx "$rs" ip addr add 192.0.2.20/32 dev lo
    nsx "$SW" ip link set "p$i" master br0 up
    i=$((i + 1))
  done

  # the router's BIRD
  mkdir -p "$RDIR"
  {
    echo "# uvs lab router $R (scripts/lab.sh --ecmp)"
    echo "log \"$RDIR/bird.log\" all;"
    echo "router id 198.51.100.129;"
    echo "protocol device { scan time 10; }"
    echo "protocol kernel {"
    echo "  ipv4 { import none; export all; };"
    echo "  merge paths on;"
    echo "}"
    echo "template bgp director {"
    echo "  local 198.51.100.129 as 65000;"
    echo "  hold time 3; keepalive time 1; connect retry time 1; error wait time 1, 5;"
    echo "  graceful restart off;"
    echo "  ipv4 { import filter { if net ~ [ 192.0.2.0/24{32,32} ] then accept; reject; }; export none; };"
    echo "}"
    for k in $(seq "$n"); do
      echo "protocol bgp lb$k from director { neighbor 198.51.100.$((129 + k)) as 65010; }"
    done
  } >"$RDIR/bird.conf"
  nsx "$R" bird -c "$RDIR/bird.conf" -s "$RDIR/bird.ctl" -P "$RDIR/bird.pid" </dev/null >/dev/null 2>&1
  wait_bridges
  trap - ERR
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
  # Frames sent before the bridge ports forward are lost.
  wait_bridges
  trap - ERR
}

case "$cmd" in
  up)
    shift 2 || true
    vip=0 dr=0 pair=0 ecmp=0
    while [ $# -gt 0 ]; do
      case "$1" in
        --vip-on-lb) vip=1 ;;
        --dr) dr=1 ;;
        --pair) pair=1 ;;
        --ecmp)
          ecmp=2
          if [[ "${2:-}" =~ ^[0-9]+$ ]]; then ecmp=$2; shift; fi
          [ "$ecmp" -ge 2 ] && [ "$ecmp" -le 8 ] || { echo "lab.sh: --ecmp N: N must be 2..8" >&2; exit 2; } ;;
        *) echo "lab.sh: unknown option '$1'" >&2; exit 2 ;;
      esac
      shift
    done
    if [ "$ecmp" != 0 ]; then
      [ "$vip$dr$pair" = 000 ] || { echo "lab.sh: --ecmp builds its own topology; no other option" >&2; exit 2; }
      up_ecmp "$ecmp"
    else
      up "$vip" "$dr" "$pair"
    fi ;;
  down) down ;;
  names) echo "$C $LB $SW $RS1 $RS2" ;;
  *) sed -n '2,9p' "$0" >&2; exit 2 ;;
esac
