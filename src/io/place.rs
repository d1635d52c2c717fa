//! Where a worker runs: the CPU it is pinned to (`uvs run --worker-cpus`).
//!
//! A sleeping worker is woken by whoever put a packet in its ring: the
//! sender's softirq on the sender's CPU. An unpinned worker is woken where
//! the scheduler finds room, on a two-CPU machine usually the other, idle,
//! CPU: an inter-processor interrupt, and on a VM a halted vCPU to bring
//! back. A pinned worker is always woken on its own CPU (see
//! `docs/bench/wake.md` for what that changed here).

use std::io;

use super::ring::Fanout;

/// `uvs run`'s placement options (flattened into its command line).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PlaceArgs {
    /// Pin the workers to CPUs: worker k runs on the k-th CPU of the
    /// comma-separated LIST, in turn (a list shorter than --workers starts
    /// again). A pinned worker is always woken on its own CPU; unpinned
    /// (the default), the scheduler picks one at each wake-up. A CPU that
    /// cannot be used is a warning and the worker unpinned.
    #[arg(long = "worker-cpus", value_name = "LIST", value_delimiter = ',')]
    pub worker_cpus: Vec<usize>,
    /// How an interface's packets are shared among the workers' AF_PACKET
    /// rings: hash (by flow, the default) or cpu (by the CPU that received
    /// the packet, on a veth the sender's: worker k takes CPU k's packets
    /// and, without --worker-cpus, is pinned to CPU k, so it is woken where
    /// the packet arrived). A single worker's group always picks by CPU
    /// (there is one ring to pick); only the pinning differs then.
    #[arg(long, value_enum, default_value_t = FanoutArg::Hash)]
    pub fanout: FanoutArg,
    /// Run the workers under the real-time policy SCHED_FIFO at PRIO
    /// (1-99): a woken worker runs at once, ahead of every ordinary task on
    /// its CPU, and is not preempted by the clients and servers it wakes,
    /// as the kernel's own forwarding runs in softirq ahead of them. A
    /// worker that never runs dry (a flood) then keeps its CPU, within the
    /// kernel's real-time throttling (kernel.sched_rt_runtime_us). 0 (the
    /// default): the process's policy. Needs CAP_SYS_NICE; where refused,
    /// a warning and the workers run unchanged.
    #[arg(long = "worker-fifo", value_name = "PRIO", default_value_t = 0,
          value_parser = clap::value_parser!(u8).range(0..=99))]
    pub worker_fifo: u8,
    /// Run the workers under SCHED_IDLE: a CPU that runs only a worker
    /// counts as idle when the scheduler places a woken task, so the
    /// client or server a worker wakes (a synchronous socket wake-up) is
    /// put on the worker's CPU and runs at once, preempting it, instead of
    /// waking the other CPU with an IPI. Any ordinary task then also takes
    /// the worker's CPU before it. Off by default; --worker-fifo overrides
    /// it.
    #[arg(long = "worker-sched-idle")]
    pub worker_sched_idle: bool,
}

impl PlaceArgs {
    /// The workers' scheduling policy these options ask for.
    pub fn policy(&self) -> Policy {
        match (self.worker_fifo, self.worker_sched_idle) {
            (0, false) => Policy::Inherit,
            (0, true) => Policy::Idle,
            (p, _) => Policy::Fifo(p),
        }
    }
}

/// A worker's scheduling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// The process's (normally SCHED_OTHER).
    #[default]
    Inherit,
    /// SCHED_FIFO at this priority (1-99).
    Fifo(u8),
    /// SCHED_IDLE.
    Idle,
}

impl Policy {
    /// Applies it to the calling thread.
    pub fn apply(self) -> io::Result<()> {
        match self {
            Policy::Inherit => Ok(()),
            Policy::Fifo(p) => fifo_current(p),
            Policy::Idle => set_policy(libc::SCHED_IDLE, 0),
        }
    }
}

/// `uvs run --fanout`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FanoutArg {
    #[default]
    Hash,
    Cpu,
}

impl From<FanoutArg> for Fanout {
    fn from(a: FanoutArg) -> Fanout {
        match a {
            FanoutArg::Hash => Fanout::Hash,
            FanoutArg::Cpu => Fanout::Cpu,
        }
    }
}

/// The CPU of worker `id` for the list `cpus` (worker k takes
/// `cpus[k % len]`); `None` when the list is empty (unpinned).
pub fn cpu_of(cpus: &[usize], id: usize) -> Option<usize> {
    (!cpus.is_empty()).then(|| cpus[id % cpus.len()])
}

/// Pins the calling thread to `cpu`.
pub fn pin_current(cpu: usize) -> io::Result<()> {
    pin(0, &[cpu])
}

/// Lets thread `tid` (0: the calling thread) run only on `cpus`.
pub fn pin(tid: libc::pid_t, cpus: &[usize]) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data for which all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // SAFETY: `cpu` is below CPU_SETSIZE (checked), so CPU_SET writes
        // inside `set`.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed, only read by
    // the kernel; a tid that is not ours is the kernel's error to return.
    let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Puts the calling thread under SCHED_FIFO at `prio` (1-99).
pub fn fifo_current(prio: u8) -> io::Result<()> {
    set_policy(libc::SCHED_FIFO, prio)
}

fn set_policy(policy: libc::c_int, prio: u8) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: libc::c_int::from(prio),
    };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param,
    // only read by the kernel.
    let rc = unsafe { libc::sched_setscheduler(0, policy, &param) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_take_the_list_in_turn() {
        assert_eq!(cpu_of(&[], 0), None);
        assert_eq!(cpu_of(&[1], 0), Some(1));
        assert_eq!(cpu_of(&[1], 3), Some(1));
        assert_eq!(cpu_of(&[0, 1], 0), Some(0));
        assert_eq!(cpu_of(&[0, 1], 1), Some(1));
        assert_eq!(cpu_of(&[0, 1], 2), Some(0));
    }

    #[test]
    fn pinning_moves_the_thread_there() {
        std::thread::spawn(|| {
            pin_current(0).expect("CPU 0 exists");
            // SAFETY: sched_getcpu has no preconditions.
            assert_eq!(unsafe { libc::sched_getcpu() }, 0);
            assert!(pin_current(libc::CPU_SETSIZE as usize).is_err());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn fifo_sets_the_policy_or_says_why_not() {
        std::thread::spawn(|| match fifo_current(1) {
            // SAFETY: sched_getscheduler(0) has no preconditions.
            Ok(()) => assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_FIFO),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}"),
        })
        .join()
        .unwrap();
        assert!(fifo_current(100).is_err(), "above the range");
    }

    #[test]
    fn sched_idle_is_applied_and_fifo_wins_over_it() {
        std::thread::spawn(|| {
            Policy::Idle.apply().expect("SCHED_IDLE needs no privilege");
            // SAFETY: sched_getscheduler(0) has no preconditions.
            assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_IDLE);
        })
        .join()
        .unwrap();
        let a = |fifo, idle| PlaceArgs {
            worker_fifo: fifo,
            worker_sched_idle: idle,
            ..PlaceArgs::default()
        };
        assert_eq!(a(0, false).policy(), Policy::Inherit);
        assert_eq!(a(0, true).policy(), Policy::Idle);
        assert_eq!(a(3, true).policy(), Policy::Fifo(3));
    }
}
