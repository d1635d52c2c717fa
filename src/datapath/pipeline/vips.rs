//! The small-configuration service lookup: a thread's inline list of the
//! services when there are few of them.

use std::net::IpAddr;
use std::sync::Arc;

use crate::datapath::service::{ServiceRt, Services};

/// Most virtual addresses [`Vips`] lists inline.
pub(super) const SMALL_VIPS: usize = 8;

/// The service lookup of one services generation: the services themselves
/// when a configuration has at most [`SMALL_VIPS`] services (a few compares
/// instead of a map probe per new connection), else the snapshot's map.
/// Derived per thread when the generation moves, in time bounded by
/// `SMALL_VIPS` whatever the number of services. (The route decision, "is
/// this a VIP?", is the snapshot's flat set at any size.)
pub(super) struct Vips {
    /// Generation of the services snapshot this was derived from (0: none).
    gen: u64,
    small: bool,
    /// The services, when `small` (their count is `svcs_n`).
    svcs: [Option<Arc<ServiceRt>>; SMALL_VIPS],
    svcs_n: usize,
}

impl Vips {
    pub(super) const EMPTY: Vips = Vips {
        gen: 0,
        small: false,
        svcs: [const { None }; SMALL_VIPS],
        svcs_n: 0,
    };

    /// Brings the list to `services` of generation `gen`.
    #[inline(always)]
    pub(super) fn follow(&mut self, gen: u64, services: &Services) {
        if self.gen != gen {
            self.derive(gen, services);
        }
    }

    #[cold]
    #[inline(never)]
    fn derive(&mut self, gen: u64, services: &Services) {
        self.gen = gen;
        self.svcs_n = 0;
        self.svcs = [const { None }; SMALL_VIPS];
        self.small = services.len() <= SMALL_VIPS;
        if !self.small {
            return;
        }
        for svc in services.iter() {
            if svc.proto == crate::datapath::service::FWMARK {
                continue;
            }
            self.svcs[self.svcs_n] = Some(Arc::clone(svc));
            self.svcs_n += 1;
        }
    }

    /// [`Services::find`]: the exact service, else the address's port-0
    /// service.
    #[inline]
    pub(super) fn find<'a>(
        &'a self,
        services: &'a Services,
        proto: u8,
        addr: IpAddr,
        port: u16,
    ) -> Option<&'a Arc<ServiceRt>> {
        if !self.small {
            return services.find(proto, addr, port);
        }
        let list = self.svcs[..self.svcs_n].iter().flatten();
        let exact = |want: u16| {
            list.clone()
                .find(|s| s.port == want && s.proto == proto && s.addr == addr)
        };
        exact(port).or_else(|| if port == 0 { None } else { exact(0) })
    }
}
