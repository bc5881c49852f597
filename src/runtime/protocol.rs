//! The typed messages between the launcher and the helper (monitor), one JSON document per
//! SOCK_SEQPACKET message, so message boundaries are the kernel's and never parsed.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::runtime::plan::ContainerPlan;

/// Largest message accepted.
const MAX_MESSAGE: usize = 1 << 20;

/// From the launcher to the helper.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Create and start the container described by the plan.
    Start(Box<ContainerPlan>),
}

/// How the container's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// The shell's convention, as docker uses: the code, or 128 + the signal number.
    pub fn as_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

/// From the helper to the launcher.
#[derive(Debug, Serialize, Deserialize)]
pub enum Event {
    /// The container's process has exec'd its command; `pid` is its pid on the host.
    Started { pid: i32 },
    /// The container could not be started; nothing of it runs.
    Failed { error: String },
    /// The container's process ended.
    Exited { status: ExitStatus },
}

/// One end of a SOCK_SEQPACKET socketpair.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// A connected pair, both ends close-on-exec.
    pub fn pair() -> io::Result<(Channel, Channel)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    pub fn from_fd(fd: OwnedFd) -> Channel {
        Channel { fd }
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    pub fn send<T: Serialize>(&self, msg: &T) -> io::Result<()> {
        let buf = serde_json::to_vec(msg).map_err(io::Error::other)?;
        loop {
            match send(self.fd.as_raw_fd(), &buf, MsgFlags::MSG_NOSIGNAL) {
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The next message, or `None` when the other end closed.
    pub fn recv<T: DeserializeOwned>(&self) -> io::Result<Option<T>> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let n = loop {
            match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_CMSG_CLOEXEC) {
                Ok(n) => break n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_slice(&buf[..n])
            .map(Some)
            .map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_eof() {
        let (a, b) = Channel::pair().unwrap();
        a.send(&Event::Started { pid: 42 }).unwrap();
        a.send(&Event::Exited {
            status: ExitStatus::Signal(9),
        })
        .unwrap();
        match b.recv::<Event>().unwrap() {
            Some(Event::Started { pid }) => assert_eq!(pid, 42),
            other => panic!("{other:?}"),
        }
        match b.recv::<Event>().unwrap() {
            Some(Event::Exited { status }) => assert_eq!(status.as_code(), 137),
            other => panic!("{other:?}"),
        }
        drop(a);
        assert!(b.recv::<Event>().unwrap().is_none());
    }
}
