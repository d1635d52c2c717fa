//! The TUN device the endpoint delivers inner packets to, and a look at
//! its reverse-path filter (read, never changed: the host's setting).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::TunnelError;

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn ifreq_named(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface names are 1 to 15 bytes",
        ));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(ifr)
}

/// A TUN device owned by this process: it disappears when the fd closes
/// (it is not made persistent), so a crash leaves nothing behind.
#[derive(Debug)]
pub struct TunDev {
    fd: OwnedFd,
    /// The device name.
    pub name: String,
}

impl TunDev {
    /// Creates TUN device `name` (`IFF_TUN | IFF_NO_PI | IFF_VNET_HDR`,
    /// non-blocking) and brings it up.
    pub fn open(name: &str) -> io::Result<TunDev> {
        // SAFETY: open(2) of a constant NUL-terminated path; the fd is owned below.
        let raw = cvt(unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: `raw` is a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut ifr = ifreq_named(name)?;
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
        // SAFETY: TUNSETIFF reads and writes the ifreq passed, which lives
        // for the call.
        cvt(unsafe { libc::ioctl(raw, libc::TUNSETIFF, &mut ifr as *mut libc::ifreq) })?;
        let tun = TunDev {
            fd,
            name: name.to_string(),
        };
        tun.set_up()?;
        Ok(tun)
    }

    /// Sets IFF_UP (SIOCGIFFLAGS / SIOCSIFFLAGS on a datagram socket).
    fn set_up(&self) -> io::Result<()> {
        // SAFETY: plain socket(2) call; the fd is owned right below.
        let raw =
            cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: `raw` is a fresh fd we own.
        let sock = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut ifr = ifreq_named(&self.name)?;
        // SAFETY: SIOCGIFFLAGS fills ifr_flags of the ifreq passed.
        cvt(unsafe {
            libc::ioctl(
                sock.as_raw_fd(),
                libc::SIOCGIFFLAGS,
                &mut ifr as *mut libc::ifreq,
            )
        })?;
        // SAFETY: the kernel just wrote ifru_flags, the union's active field.
        let flags = unsafe { ifr.ifr_ifru.ifru_flags };
        ifr.ifr_ifru.ifru_flags = flags | libc::IFF_UP as i16;
        // SAFETY: SIOCSIFFLAGS reads the ifreq passed.
        cvt(unsafe {
            libc::ioctl(
                sock.as_raw_fd(),
                libc::SIOCSIFFLAGS,
                &mut ifr as *mut libc::ifreq,
            )
        })?;
        Ok(())
    }

    /// Writes one packet (virtio-net header + IP packet).
    pub fn write_packet(&self, pkt: &[u8]) -> io::Result<()> {
        // SAFETY: write(2) from a live slice of the length passed.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), pkt.as_ptr().cast(), pkt.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != pkt.len() {
            return Err(io::Error::other("short write to the TUN device"));
        }
        Ok(())
    }

    /// Reads and discards whatever the stack sent into the device; returns
    /// how many packets.
    pub(super) fn discard(&self, scratch: &mut [u8]) -> u64 {
        let mut n = 0;
        loop {
            // SAFETY: read(2) into a live buffer of the length passed.
            let r = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    scratch.as_mut_ptr().cast(),
                    scratch.len(),
                )
            };
            if r <= 0 {
                return n;
            }
            n += 1;
        }
    }
}

impl AsRawFd for TunDev {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn sysctl_read(path: &str) -> Result<String, TunnelError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|err| TunnelError::Sysctl {
            path: path.into(),
            err,
        })
}

/// Whether IPv4 reverse-path filtering on `dev` is strict (the kernel
/// uses the larger of `all` and the device's value; 1 is strict).
pub(super) fn strict_rp_filter(dev: &str) -> Result<bool, TunnelError> {
    let all = sysctl_read("/proc/sys/net/ipv4/conf/all/rp_filter")?;
    let own = sysctl_read(&format!("/proc/sys/net/ipv4/conf/{dev}/rp_filter"))?;
    Ok(all.max(own) == "1")
}
