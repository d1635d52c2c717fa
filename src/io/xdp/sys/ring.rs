//! The memory shared with the kernel by an AF_XDP socket: owned mappings
//! and the four single-producer/single-consumer rings, plus the socket
//! options that set them up.
//!
//! The kernel is the other side of every ring: the producer index is
//! published with Release after the entries are written, and read with
//! Acquire before entries are read (the kernel does the same). Entries move
//! in batches; one index store per batch.

use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// An owned memory mapping, unmapped on drop.
#[derive(Debug)]
pub(super) struct Mmap {
    pub(super) ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; `Mmap` itself
// never reads or writes it. Its users (the socket halves) touch disjoint
// frames only, each through `&mut` of its own half.
unsafe impl Send for Mmap {}
// SAFETY: as above: `&Mmap` gives access to nothing but the address.
unsafe impl Sync for Mmap {}

impl Mmap {
    pub(super) fn new(
        len: usize,
        prot: i32,
        flags: i32,
        fd: RawFd,
        offset: i64,
    ) -> io::Result<Mmap> {
        // SAFETY: a fresh mapping chosen by the kernel (addr NULL); it
        // aliases no Rust object.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, offset) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave NULL"))?;
        Ok(Mmap { ptr, len })
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this value owns; no reference
        // into it outlives `self` (they all borrow `self`).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// One mmapped ring: producer, consumer and flags words and `size` entries
/// of `elem` bytes.
#[derive(Debug)]
pub(super) struct Ring {
    map: Mmap,
    producer: usize,
    consumer: usize,
    flags: usize,
    desc: usize,
    elem: usize,
    mask: u32,
    cached_prod: u32,
    cached_cons: u32,
}

impl Ring {
    pub(super) fn map(
        fd: RawFd,
        pgoff: i64,
        off: &libc::xdp_ring_offset,
        size: u32,
        elem: usize,
    ) -> io::Result<Ring> {
        let words = [off.producer, off.consumer, off.flags, off.desc];
        if words.iter().any(|w| !w.is_multiple_of(4)) || !off.desc.is_multiple_of(8) {
            return Err(io::Error::other("AF_XDP ring offsets misaligned"));
        }
        let len = off.desc as usize + size as usize * elem;
        if words[..3].iter().any(|&w| w as usize + 4 > len) {
            return Err(io::Error::other("AF_XDP ring offsets out of range"));
        }
        let map = Mmap::new(
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd,
            pgoff,
        )?;
        let mut r = Ring {
            map,
            producer: off.producer as usize,
            consumer: off.consumer as usize,
            flags: off.flags as usize,
            desc: off.desc as usize,
            elem,
            mask: size - 1,
            cached_prod: 0,
            cached_cons: 0,
        };
        r.cached_prod = r.word(r.producer).load(Ordering::Acquire);
        r.cached_cons = r.word(r.consumer).load(Ordering::Acquire);
        Ok(r)
    }

    fn word(&self, off: usize) -> &AtomicU32 {
        // SAFETY: `off` is one of the kernel's word offsets, checked at
        // `map` to lie inside the mapping and be 4-aligned (the mapping is
        // page-aligned); the kernel updates these words concurrently, which
        // is why they are only ever accessed atomically.
        unsafe { &*self.map.ptr.as_ptr().add(off).cast::<AtomicU32>() }
    }

    pub(super) fn size(&self) -> u32 {
        self.mask + 1
    }

    fn slot(&self, idx: u32) -> *mut u8 {
        // In bounds: desc + (idx & mask) * elem < desc + size * elem = len.
        self.map
            .ptr
            .as_ptr()
            .wrapping_add(self.desc + (idx & self.mask) as usize * self.elem)
    }

    /// Free producer slots, up to `want`.
    pub(super) fn free(&mut self, want: u32) -> u32 {
        let mut free = self.size() - self.cached_prod.wrapping_sub(self.cached_cons);
        if free < want {
            self.cached_cons = self.word(self.consumer).load(Ordering::Acquire);
            free = self.size() - self.cached_prod.wrapping_sub(self.cached_cons);
        }
        free.min(want)
    }

    /// Entries ready for the consumer, up to `want`.
    pub(super) fn ready(&mut self, want: u32) -> u32 {
        let mut ready = self.cached_prod.wrapping_sub(self.cached_cons);
        if ready < want {
            self.cached_prod = self.word(self.producer).load(Ordering::Acquire);
            ready = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        ready.min(want)
    }

    /// Writes a u64 entry (fill ring) `i` slots past the producer.
    pub(super) fn put_addr(&mut self, i: u32, addr: u64) {
        debug_assert_eq!(self.elem, 8);
        // SAFETY: an in-bounds, 8-aligned slot (see `slot`) that the kernel
        // does not read before the producer index passes it (`submit`).
        unsafe {
            self.slot(self.cached_prod.wrapping_add(i))
                .cast::<u64>()
                .write(addr)
        }
    }

    /// Writes a descriptor (TX ring) `i` slots past the producer.
    pub(super) fn put_desc(&mut self, i: u32, addr: u64, len: u32) {
        debug_assert_eq!(self.elem, 16);
        let d = libc::xdp_desc {
            addr,
            len,
            options: 0,
        };
        // SAFETY: as in `put_addr`; `xdp_desc` is 16 bytes, 8-aligned.
        unsafe {
            self.slot(self.cached_prod.wrapping_add(i))
                .cast::<libc::xdp_desc>()
                .write(d)
        }
    }

    pub(super) fn submit(&mut self, n: u32) {
        self.cached_prod = self.cached_prod.wrapping_add(n);
        self.word(self.producer)
            .store(self.cached_prod, Ordering::Release);
    }

    /// Reads a u64 entry (completion ring) `i` slots past the consumer.
    pub(super) fn get_addr(&self, i: u32) -> u64 {
        // SAFETY: in-bounds, 8-aligned; the kernel published it (Acquire in
        // `ready`) and does not rewrite it before `release`.
        unsafe {
            self.slot(self.cached_cons.wrapping_add(i))
                .cast::<u64>()
                .read()
        }
    }

    /// Reads a descriptor (RX ring) `i` slots past the consumer.
    pub(super) fn get_desc(&self, i: u32) -> (u64, u32) {
        // SAFETY: as in `get_addr`.
        let d = unsafe {
            self.slot(self.cached_cons.wrapping_add(i))
                .cast::<libc::xdp_desc>()
                .read()
        };
        (d.addr, d.len)
    }

    /// Reads a descriptor's options (`XDP_PKT_CONTD`) `i` slots past the
    /// consumer.
    pub(super) fn get_options(&self, i: u32) -> u32 {
        // SAFETY: as in `get_addr`.
        unsafe {
            self.slot(self.cached_cons.wrapping_add(i))
                .cast::<libc::xdp_desc>()
                .read()
                .options
        }
    }

    pub(super) fn release(&mut self, n: u32) {
        self.cached_cons = self.cached_cons.wrapping_add(n);
        self.word(self.consumer)
            .store(self.cached_cons, Ordering::Release);
    }

    /// Producer entries the kernel has not consumed yet.
    pub(super) fn unconsumed(&mut self) -> u32 {
        self.cached_cons = self.word(self.consumer).load(Ordering::Acquire);
        self.cached_prod.wrapping_sub(self.cached_cons)
    }

    pub(super) fn needs_wakeup(&self) -> bool {
        self.word(self.flags).load(Ordering::Acquire) & libc::XDP_RING_NEED_WAKEUP != 0
    }
}

pub(super) fn setsockopt<T>(fd: RawFd, opt: i32, v: &T) -> io::Result<()> {
    setsockopt_at(fd, libc::SOL_XDP, opt, v)
}

/// `setsockopt(2)` at `level`.
pub(super) fn setsockopt_at<T>(fd: RawFd, level: i32, opt: i32, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a live value of `size_of::<T>()` bytes, read only.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Kernel structs made of integers only: all-zero bytes (and any bytes the
/// kernel writes) are a valid value.
///
/// # Safety
/// Implement only for `#[repr(C)]` structs of plain integers.
pub(super) unsafe trait Plain: Sized {}
// SAFETY: `#[repr(C)]` structs of u64/u32 fields only.
unsafe impl Plain for libc::xdp_mmap_offsets {}
// SAFETY: as above.
unsafe impl Plain for libc::xdp_statistics {}
// SAFETY: as above.
unsafe impl Plain for libc::xdp_options {}

pub(super) fn getsockopt<T: Plain>(fd: RawFd, opt: i32) -> io::Result<T> {
    // SAFETY: `T: Plain`, so all-zero is a valid T.
    let mut v: T = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `v`, which is that
    // large; `T: Plain` is valid for any bytes.
    let rc =
        unsafe { libc::getsockopt(fd, libc::SOL_XDP, opt, (&mut v as *mut T).cast(), &mut len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}
