//! The typed messages between the launcher and the helper (monitor): one JSON document per
//! message, carried as SOCK_SEQPACKET packets of at most [`PACKET`] bytes (so boundaries are
//! the kernel's and never parsed), each led by a byte saying whether more of the document
//! follows. A document may be as large as [`MAX_MESSAGE`]: a plan holding an image's whole
//! environment fits, where one packet could not pass the socket's buffer.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::runtime::plan::ContainerPlan;

/// Largest document accepted (an image config is at most 4 MiB; a spec far less).
pub const MAX_MESSAGE: usize = 16 << 20;
/// Largest packet, well inside the default socket buffer.
const PACKET: usize = 64 << 10;
/// The first byte of a packet: the document goes on in the next packet, or ends here.
const MORE: u8 = 1;
const LAST: u8 = 0;

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
    /// The container's terminal (`-t`): its packet carries the pty master, sent by the init
    /// before it execs (so before `Started`).
    Terminal,
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
        self.send_with_fd(msg, None)
    }

    /// Sends `msg` with `fd` attached to its last packet (SCM_RIGHTS).
    pub fn send_with_fd<T: Serialize>(&self, msg: &T, fd: Option<RawFd>) -> io::Result<()> {
        let doc = serde_json::to_vec(msg).map_err(io::Error::other)?;
        if doc.len() > MAX_MESSAGE {
            return Err(io::Error::other(format!(
                "message of {} bytes is larger than the {MAX_MESSAGE} bytes allowed",
                doc.len()
            )));
        }
        let chunks: Vec<&[u8]> = doc.chunks(PACKET - 1).collect();
        let mut packet = Vec::with_capacity(PACKET.min(doc.len() + 1));
        let fds: Vec<RawFd> = fd.into_iter().collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            packet.clear();
            packet.push(if last { LAST } else { MORE });
            packet.extend_from_slice(chunk);
            let rights = [ControlMessage::ScmRights(&fds)];
            let cmsgs: &[ControlMessage] = if last && !fds.is_empty() {
                &rights
            } else {
                &[]
            };
            loop {
                let iov = [IoSlice::new(&packet)];
                match sendmsg::<()>(
                    self.fd.as_raw_fd(),
                    &iov,
                    cmsgs,
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                ) {
                    Ok(_) => break,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// The next message, or `None` when the other end closed.
    pub fn recv<T: DeserializeOwned>(&self) -> io::Result<Option<T>> {
        Ok(self.recv_with_fd()?.map(|(msg, _)| msg))
    }

    /// The next message and the fd that came with it, if one did.
    pub fn recv_with_fd<T: DeserializeOwned>(&self) -> io::Result<Option<(T, Option<OwnedFd>)>> {
        let mut doc = Vec::new();
        let mut packet = vec![0u8; PACKET];
        let mut fd = None;
        loop {
            let mut space = nix::cmsg_space!([RawFd; 1]);
            let n = loop {
                let mut iov = [IoSliceMut::new(&mut packet)];
                match recvmsg::<()>(
                    self.fd.as_raw_fd(),
                    &mut iov,
                    Some(&mut space),
                    MsgFlags::MSG_CMSG_CLOEXEC,
                ) {
                    Ok(msg) => {
                        for c in msg.cmsgs().into_iter().flatten() {
                            if let ControlMessageOwned::ScmRights(fds) = c {
                                for raw in fds {
                                    // The kernel just installed `raw` for this message.
                                    let owned = crate::sys::process::take_fd(raw);
                                    fd.get_or_insert(owned);
                                }
                            }
                        }
                        break msg.bytes;
                    }
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            };
            if n == 0 {
                return if doc.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::other(
                        "the other end closed in the middle of a message",
                    ))
                };
            }
            doc.extend_from_slice(&packet[1..n]);
            if doc.len() > MAX_MESSAGE {
                return Err(io::Error::other(format!(
                    "message larger than the {MAX_MESSAGE} bytes allowed"
                )));
            }
            if packet[0] == LAST {
                break;
            }
        }
        serde_json::from_slice(&doc)
            .map(|msg| Some((msg, fd)))
            .map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_larger_than_the_socket_buffer_arrives_whole() {
        let (a, b) = Channel::pair().unwrap();
        let big = "x".repeat(3 << 20);
        let sender = std::thread::spawn(move || {
            a.send(&Event::Failed { error: big }).unwrap();
            a
        });
        match b.recv::<Event>().unwrap() {
            Some(Event::Failed { error }) => assert_eq!(error.len(), 3 << 20),
            other => panic!("{other:?}"),
        }
        drop(sender.join().unwrap());
        assert!(b.recv::<Event>().unwrap().is_none());
        let (a, _b) = Channel::pair().unwrap();
        let too_big = "x".repeat(MAX_MESSAGE + 1);
        let e = a.send(&Event::Failed { error: too_big }).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
    }

    #[test]
    fn an_fd_travels_with_its_message() {
        let (a, b) = Channel::pair().unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        a.send_with_fd(&Event::Terminal, Some(w.as_raw_fd()))
            .unwrap();
        drop(w);
        match b.recv_with_fd::<Event>().unwrap() {
            Some((Event::Terminal, Some(fd))) => {
                nix::unistd::write(&fd, b"x").unwrap();
                let mut buf = [0u8; 1];
                assert_eq!(nix::unistd::read(&r, &mut buf).unwrap(), 1);
            }
            other => panic!("{other:?}"),
        }
        a.send(&Event::Started { pid: 1 }).unwrap();
        assert!(matches!(
            b.recv_with_fd::<Event>().unwrap(),
            Some((Event::Started { pid: 1 }, None))
        ));
    }

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
