//! `bpf(2)`: maps, program load, XDP attach through a BPF link, and
//! `BPF_PROG_TEST_RUN`.
//!
//! A map remembers its key and value sizes, so lookups and updates can check
//! the caller's buffers before the kernel reads or writes them. XDP programs
//! are attached with `BPF_LINK_CREATE`: the attachment lives exactly as long
//! as the link's file descriptor, so it ends when uvs drops it, exits, or
//! dies by any signal — nothing can be left attached behind a crash.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::super::asm::Insn;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;

/// Map types used by the steering program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapType {
    Hash = 1,
    PerCpuArray = 6,
    /// A hash map that evicts its least recently used entries when full.
    LruHash = 9,
    /// Longest-prefix match (`struct bpf_lpm_trie_key` keys).
    LpmTrie = 11,
    XskMap = 17,
}

/// `BPF_F_NO_PREALLOC`, which an LPM trie requires.
const BPF_F_NO_PREALLOC: u32 = 1;

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `BPF_F_XDP_HAS_FRAGS` (Linux 5.18): the program handles multi-buffer
/// packets (its direct packet access covers the first buffer only), so
/// drivers may hand it packets larger than a page.
pub const BPF_F_XDP_HAS_FRAGS: u32 = 1 << 5;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    /// Explicit, so the bytes the kernel checks for zero are never padding.
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// Runs one `bpf(2)` command on `attr` (a `#[repr(C)]` prefix of
/// `union bpf_attr`; the kernel zero-extends a shorter one).
fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, exclusively borrowed value of exactly
    // `size_of::<T>()` bytes; every pointer inside it was set by the callers
    // below to buffers that outlive this call and have the sizes the kernel
    // will use (checked by the callers).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn fd_from(rc: libc::c_long) -> OwnedFd {
    // SAFETY: a successful map/prog/link command returns a new file
    // descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(rc as RawFd) }
}

fn name16(name: &str) -> [u8; 16] {
    let mut n = [0u8; 16];
    // Kernel object names: at most 15 bytes of [A-Za-z0-9_.].
    for (d, s) in n.iter_mut().zip(name.bytes().take(15)) {
        *d = if s.is_ascii_alphanumeric() || s == b'_' || s == b'.' {
            s
        } else {
            b'_'
        };
    }
    n
}

/// A BPF map with the sizes the kernel uses for its keys and values.
#[derive(Debug)]
pub struct Map {
    fd: OwnedFd,
    key_size: usize,
    /// Bytes of one lookup/update value (for per-CPU maps: every CPU's).
    value_len: usize,
}

impl Map {
    /// Creates a map. `cpus` is the number of possible CPUs (per-CPU maps
    /// read and write one 8-byte-aligned value for each).
    pub fn create(
        ty: MapType,
        name: &str,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        cpus: usize,
    ) -> io::Result<Map> {
        let mut attr = MapCreateAttr {
            map_type: ty as u32,
            key_size,
            value_size,
            max_entries,
            map_flags: if ty == MapType::LpmTrie {
                BPF_F_NO_PREALLOC
            } else {
                0
            },
            map_name: name16(name),
            ..Default::default()
        };
        let fd = fd_from(sys_bpf(BPF_MAP_CREATE, &mut attr)?);
        let value_len = if ty == MapType::PerCpuArray {
            (value_size as usize).div_ceil(8) * 8 * cpus.max(1)
        } else {
            value_size as usize
        };
        Ok(Map {
            fd,
            key_size: key_size as usize,
            value_len,
        })
    }

    /// A second handle on the same map (for another thread).
    pub fn try_clone(&self) -> io::Result<Map> {
        Ok(Map {
            fd: self.fd.try_clone()?,
            key_size: self.key_size,
            value_len: self.value_len,
        })
    }

    /// The map's file descriptor (for `ld_imm64` in a program).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Bytes of a value buffer for [`Map::lookup`].
    pub fn value_len(&self) -> usize {
        self.value_len
    }

    fn check(&self, key: &[u8], value: usize) -> io::Result<()> {
        if key.len() != self.key_size || value != self.value_len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "BPF map key/value of {}/{} bytes, map has {}/{}",
                    key.len(),
                    value,
                    self.key_size,
                    self.value_len
                ),
            ));
        }
        Ok(())
    }

    /// Inserts or replaces `key` → `value`.
    pub fn update(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.check(key, value.len())?;
        let mut attr = MapElemAttr {
            map_fd: self.raw_fd() as u32,
            key: key.as_ptr() as u64,
            value: value.as_ptr() as u64,
            ..Default::default()
        };
        sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
    }

    /// Removes `key` (an error `NotFound` when absent).
    pub fn delete(&self, key: &[u8]) -> io::Result<()> {
        self.check(key, self.value_len)?;
        let mut attr = MapElemAttr {
            map_fd: self.raw_fd() as u32,
            key: key.as_ptr() as u64,
            ..Default::default()
        };
        sys_bpf(BPF_MAP_DELETE_ELEM, &mut attr).map(drop)
    }

    /// Reads `key` into `value` (`NotFound` when absent).
    pub fn lookup(&self, key: &[u8], value: &mut [u8]) -> io::Result<()> {
        self.check(key, value.len())?;
        let mut attr = MapElemAttr {
            map_fd: self.raw_fd() as u32,
            key: key.as_ptr() as u64,
            value: value.as_mut_ptr() as u64,
            ..Default::default()
        };
        sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).map(drop)
    }
}

/// A loaded XDP program.
#[derive(Debug)]
pub struct Prog {
    fd: OwnedFd,
}

/// The verifier's refusal, with its log.
#[derive(Debug)]
pub struct LoadError {
    pub error: io::Error,
    pub log: String,
}

impl Prog {
    /// Loads `insns` as an XDP program, with the verifier's log on failure.
    pub fn load_xdp(name: &str, insns: &[Insn]) -> Result<Prog, LoadError> {
        Self::load_xdp_flags(name, insns, 0)
    }

    /// [`Prog::load_xdp`] with `BPF_F_*` `prog_flags` (for example
    /// [`BPF_F_XDP_HAS_FRAGS`]).
    pub fn load_xdp_flags(name: &str, insns: &[Insn], prog_flags: u32) -> Result<Prog, LoadError> {
        let code: Vec<u64> = insns
            .iter()
            .map(|i| {
                u64::from_le_bytes({
                    let mut b = [0u8; 8];
                    b[0] = i.code;
                    b[1] = i.regs;
                    b[2..4].copy_from_slice(&i.off.to_ne_bytes());
                    b[4..8].copy_from_slice(&i.imm.to_ne_bytes());
                    b
                })
            })
            .collect();
        // Only helpers open to every license are called.
        let license = c"MIT OR Apache-2.0";
        let mut log = vec![0u8; 1 << 20];
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: code.len() as u32,
            insns: code.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 1,
            log_size: log.len() as u32,
            log_buf: log.as_mut_ptr() as u64,
            prog_name: name16(name),
            prog_flags,
            ..Default::default()
        };
        match sys_bpf(BPF_PROG_LOAD, &mut attr) {
            Ok(rc) => Ok(Prog { fd: fd_from(rc) }),
            Err(error) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                Err(LoadError {
                    error,
                    log: String::from_utf8_lossy(&log[..end]).into_owned(),
                })
            }
        }
    }

    /// Attaches to interface `ifindex` (of the calling thread's network
    /// namespace) with `XDP_FLAGS_*` `flags`; detached when the link drops.
    pub fn attach_xdp(&self, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
        let mut attr = LinkCreateAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            target_ifindex: ifindex,
            attach_type: BPF_XDP,
            flags,
        };
        Ok(fd_from(sys_bpf(BPF_LINK_CREATE, &mut attr)?))
    }

    /// Runs the program once on `packet` (`BPF_PROG_TEST_RUN`) and returns
    /// its verdict.
    pub fn test_run(&self, packet: &[u8]) -> io::Result<u32> {
        let mut attr = TestRunAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            data_size_in: packet.len() as u32,
            data_in: packet.as_ptr() as u64,
            repeat: 1,
            ..Default::default()
        };
        sys_bpf(BPF_PROG_TEST_RUN, &mut attr)?;
        Ok(attr.retval)
    }
}
