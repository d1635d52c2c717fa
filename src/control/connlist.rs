//! `uvsadm -L -c` as a streamed reply: the connection table is read page
//! by page ([`uvs_conntrack::Table::list_page`], one shard lock at a time)
//! and each page is formatted and sent before the next is read, so listing
//! millions of connections costs the daemon one page of memory and never
//! holds a lock for long. Like the kernel's `/proc/net/ip_vs_conn`, it is
//! not an atomic snapshot: an entry added or removed during the walk may
//! or may not appear, none appears twice.
//!
//! Also the test-only request that fills the table ([`fill`]), so a test
//! can list a million entries without a million-packet flood.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use uvs_conntrack::{ConnInfo, ListCursor, NewConn, PacketInfo, Table};

use crate::control::ctl;
use crate::control::socket::{Next, Reply, Stream, STREAM_CHUNK};
use crate::datapath::pipeline::Pipeline;
use crate::datapath::service::Services;

/// Entries read per page.
const PAGE: usize = 2048;

/// A listing row from a table entry.
pub fn row(c: &ConnInfo) -> ctl::ConnRow {
    let proto = match c.proto {
        6 => ctl::Proto::Tcp,
        17 => ctl::Proto::Udp,
        _ => ctl::Proto::Sctp,
    };
    ctl::ConnRow {
        proto,
        expire_ms: c.expires_in_ms,
        state: c.state.name().to_string(),
        client: SocketAddr::new(c.caddr, c.cport),
        virt: SocketAddr::new(c.vaddr, c.vport),
        dest: SocketAddr::new(c.daddr, c.dport),
    }
}

/// The streamed `-L -c` listing.
pub struct Listing {
    pipeline: Arc<Pipeline>,
    head: Option<String>,
    cursor: Option<ListCursor>,
    /// The table's clock when the listing started, and since when.
    now: u64,
    started: Instant,
    page: Vec<ConnInfo>,
}

impl std::fmt::Debug for Listing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listing")
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

impl Listing {
    /// A listing of `pipeline`'s table; `now` is the table's clock (ms),
    /// `pe` adds `--persistent-conn`'s title columns.
    pub fn new(pipeline: Arc<Pipeline>, now: u64, pe: bool) -> Listing {
        Listing {
            pipeline,
            head: Some(ctl::format::connections_head(pe)),
            cursor: Some(ListCursor::default()),
            now,
            started: Instant::now(),
            page: Vec::with_capacity(PAGE),
        }
    }
}

impl Stream for Listing {
    fn next(&mut self, out: &mut String) -> Next {
        if let Some(h) = self.head.take() {
            out.push_str(&h);
        }
        let now = self.now + self.started.elapsed().as_millis() as u64;
        while out.len() < STREAM_CHUNK {
            let Some(c) = self.cursor else {
                return Next::End(Reply::ok(""));
            };
            self.page.clear();
            self.cursor = self.pipeline.conns.list_page(c, PAGE, now, &mut self.page);
            for e in &self.page {
                ctl::format::connection_row(out, &row(e));
            }
        }
        if self.cursor.is_none() {
            return Next::End(Reply::ok(""));
        }
        Next::More
    }
}

/// Environment variable that enables test-only control requests in `uvs
/// run` (read at each request; never set it in production).
pub const TEST_ENV: &str = "UVS_TEST_REQUESTS";

/// `test-fill PROTO VIP PORT N` (only with [`TEST_ENV`]=1): inserts N
/// synthetic connections to the service's first real server, clients
/// 198.51.100.x / 2001:db8:c::x with every port, as if each had sent one
/// packet (a TCP one with ACK set, so they count as ESTABLISHED).
pub fn fill(table: &Table, services: &Services, now: u64, args: &[String]) -> Reply {
    if std::env::var(TEST_ENV).as_deref() != Ok("1") {
        return Reply::err(format!(
            "test-fill is a test-only request (uvs run with {TEST_ENV}=1)"
        ));
    }
    let [proto, vip, port, n] = args else {
        return Reply::err("test-fill PROTO VIP PORT N");
    };
    let (Ok(proto), Ok(vip), Ok(port), Ok(n)) = (
        proto.parse::<u8>(),
        vip.parse::<IpAddr>(),
        port.parse::<u16>(),
        n.parse::<u32>(),
    ) else {
        return Reply::err("test-fill PROTO VIP PORT N: bad number or address");
    };
    let Some(svc) = services.get(&(proto, vip, port)) else {
        return Reply::err("test-fill: no such service");
    };
    let Some(dest) = svc.dests.first() else {
        return Reply::err("test-fill: the service has no real server");
    };
    let first = match proto {
        6 => PacketInfo::tcp(0x10, 60),
        17 => PacketInfo::udp(60),
        _ => PacketInfo::sctp(0, 60),
    };
    let mut added = 0u32;
    for i in 0..n {
        let (hi, lo) = ((i >> 16) as u8, (i & 0xffff) as u16);
        let caddr = match vip {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(198, 51, 100, hi)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, hi.into())),
        };
        let c = NewConn {
            proto,
            caddr,
            cport: lo,
            vaddr: vip,
            vport: port,
            daddr: dest.addr,
            dport: dest.port,
            dest: dest.clone(),
            fwd: dest.fwd_method(),
        };
        if table.add(c, first, now).is_ok() {
            added += 1;
        }
    }
    Reply::ok(format!("{added}\n"))
}
