//! Network interfaces by name, through the interface ioctls (SIOCGIFINDEX, SIOCGIFFLAGS,
//! SIOCSIFFLAGS) on any socket: they act in the namespace the socket belongs to and cost a
//! name lookup, where an RTM_GETLINK request has the kernel fill in every attribute of the
//! link (its IPv4 and IPv6 settings among them) only for the caller to read one number.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// An ifreq naming `name`; names longer than the kernel's limit (15 bytes) are refused.
fn request(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() || name.as_bytes().contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not an interface name: {name:?}"),
        ));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

/// Runs the reading interface ioctl `op` for `name` on `sock`; None if no such interface.
fn query(sock: BorrowedFd<'_>, op: libc::c_ulong, name: &str) -> io::Result<Option<libc::ifreq>> {
    let mut req = request(name)?;
    // SAFETY: `op` is SIOCGIFINDEX or SIOCGIFFLAGS, which read the name from `req` and write
    // their answer into it; `req` is a valid ifreq that outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), op as _, &mut req) } < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENODEV) => Ok(None),
            _ => Err(err),
        };
    }
    Ok(Some(req))
}

/// The index of interface `name` in the namespace of `sock`; None if there is none.
pub fn index(sock: BorrowedFd<'_>, name: &str) -> io::Result<Option<u32>> {
    Ok(query(sock, libc::SIOCGIFINDEX, name)?.map(|req| {
        // SAFETY: SIOCGIFINDEX just filled in the union field ifru_ifindex.
        unsafe { req.ifr_ifru.ifru_ifindex as u32 }
    }))
}

/// Sets IFF_UP on the loopback interface of the current network namespace.
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: socket(2) with constant arguments; the returned fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid socket we exclusively own from here on.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = query(sock.as_fd(), libc::SIOCGIFFLAGS, "lo")?
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
    // SAFETY: the union field ifru_flags was just filled in by SIOCGIFFLAGS.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads `req`, a valid ifreq that outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_kernel_cannot_hold_are_refused() {
        assert!(request("eth0").is_ok());
        assert!(request("fifteen-bytes-x").is_ok());
        assert!(request("sixteen-bytes-xx").is_err());
        assert!(request("a\0b").is_err());
    }

    #[test]
    fn finds_loopback_and_nothing_for_a_missing_name() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = sock.as_fd();
        assert!(index(fd, "lo").unwrap().is_some_and(|i| i >= 1));
        assert_eq!(index(fd, "no-such-link0").unwrap(), None);
    }
}
