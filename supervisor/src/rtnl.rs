//! Two rtnetlink requests, by interface index: set a link down
//! (RTM_NEWLINK with IFF_UP cleared) and delete a link (RTM_DELLINK).
//!
//! Each is a fixed 32-byte message (nlmsghdr + ifinfomsg) acknowledged by
//! an NLMSG_ERROR packet, built and parsed here with plain byte encoding
//! (no unsafe, no extra dependency). AF_NETLINK exists even with
//! CONFIG_INET=n.

use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use std::os::fd::{AsRawFd, OwnedFd};
use thiserror::Error;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const IFF_UP: u32 = 1;
const HDR_LEN: usize = 16;
const MSG_LEN: usize = 32;

/// Failing operation of this module.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RtnlError {
    #[error("netlink socket: {0}")]
    Socket(nix::Error),
    #[error("netlink send: {0}")]
    Send(nix::Error),
    #[error("netlink receive: {0}")]
    Recv(nix::Error),
    #[error("netlink reply malformed: {0}")]
    Malformed(&'static str),
    /// The kernel refused the request with this errno.
    #[error("{0}")]
    Refused(nix::Error),
}

/// A NETLINK_ROUTE socket in the caller's network namespace.
pub struct Rtnl {
    fd: OwnedFd,
    seq: u32,
}

/// Encodes a link request (pure; tested).
pub fn encode_link_request(
    msg_type: u16,
    seq: u32,
    ifindex: i32,
    flags: u32,
    change: u32,
) -> [u8; MSG_LEN] {
    let mut b = [0u8; MSG_LEN];
    b[0..4].copy_from_slice(&(MSG_LEN as u32).to_ne_bytes());
    b[4..6].copy_from_slice(&msg_type.to_ne_bytes());
    b[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    // b[12..16] port id 0: the kernel fills it in.
    // ifinfomsg: family AF_UNSPEC (0), pad, type 0.
    b[20..24].copy_from_slice(&ifindex.to_ne_bytes());
    b[24..28].copy_from_slice(&flags.to_ne_bytes());
    b[28..32].copy_from_slice(&change.to_ne_bytes());
    b
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_ne_bytes)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_ne_bytes)
}

/// Looks for the acknowledgement of request `seq` in one received buffer
/// (pure; tested). `Ok(Some(Ok(())))`: acknowledged; `Ok(Some(Err(Refused)))`:
/// the kernel refused with that errno; `Ok(None)`: not in this buffer (keep
/// reading); `Err(Malformed)`: the buffer is not valid netlink.
pub fn parse_ack(buf: &[u8], seq: u32) -> Result<Option<Result<(), RtnlError>>, RtnlError> {
    let mut off = 0usize;
    while off + HDR_LEN <= buf.len() {
        let len = u32_at(buf, off).ok_or(RtnlError::Malformed("short header"))? as usize;
        let ty = u16_at(buf, off + 4).ok_or(RtnlError::Malformed("short header"))?;
        let mseq = u32_at(buf, off + 8).ok_or(RtnlError::Malformed("short header"))?;
        if len < HDR_LEN || off + len > buf.len() {
            return Err(RtnlError::Malformed("bad message length"));
        }
        if ty == NLMSG_ERROR && mseq == seq {
            let code = u32_at(buf, off + HDR_LEN)
                .ok_or(RtnlError::Malformed("short error message"))? as i32;
            return Ok(Some(if code == 0 {
                Ok(())
            } else {
                Err(RtnlError::Refused(nix::Error::from_raw(-code)))
            }));
        }
        off += (len + 3) & !3;
    }
    Ok(None)
}

impl Rtnl {
    pub fn open() -> Result<Rtnl, RtnlError> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(RtnlError::Socket)?;
        // Never block PID 1 for long on a missing answer.
        let tv = nix::sys::time::TimeVal::new(2, 0);
        socket::setsockopt(&fd, socket::sockopt::ReceiveTimeout, &tv).map_err(RtnlError::Socket)?;
        Ok(Rtnl { fd, seq: 1 })
    }

    fn request(
        &mut self,
        msg_type: u16,
        ifindex: i32,
        flags: u32,
        change: u32,
    ) -> Result<(), RtnlError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let msg = encode_link_request(msg_type, seq, ifindex, flags, change);
        socket::sendto(
            self.fd.as_raw_fd(),
            &msg,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )
        .map_err(RtnlError::Send)?;
        let mut buf = [0u8; 8192];
        for _ in 0..16 {
            let n = socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())
                .map_err(RtnlError::Recv)?;
            let got = buf.get(..n).ok_or(RtnlError::Malformed("receive length"))?;
            if let Some(r) = parse_ack(got, seq)? {
                return r;
            }
        }
        Err(RtnlError::Malformed("no acknowledgement"))
    }

    /// Clears IFF_UP on the link.
    pub fn set_down(&mut self, ifindex: i32) -> Result<(), RtnlError> {
        self.request(RTM_NEWLINK, ifindex, 0, IFF_UP)
    }

    /// Deletes the link (virtual devices only; physical ones answer EOPNOTSUPP).
    pub fn delete(&mut self, ifindex: i32) -> Result<(), RtnlError> {
        self.request(RTM_DELLINK, ifindex, 0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let b = encode_link_request(RTM_DELLINK, 7, 3, 0, 0);
        assert_eq!(u32_at(&b, 0), Some(32));
        assert_eq!(u16_at(&b, 4), Some(17));
        assert_eq!(u16_at(&b, 6), Some(5));
        assert_eq!(u32_at(&b, 8), Some(7));
        assert_eq!(u32_at(&b, 20), Some(3));
        let b = encode_link_request(RTM_NEWLINK, 1, 9, 0, IFF_UP);
        assert_eq!(u32_at(&b, 24), Some(0));
        assert_eq!(u32_at(&b, 28), Some(1));
    }

    fn error_msg(seq: u32, code: i32) -> Vec<u8> {
        let mut v = vec![0u8; 36];
        v[0..4].copy_from_slice(&36u32.to_ne_bytes());
        v[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        v[8..12].copy_from_slice(&seq.to_ne_bytes());
        v[16..20].copy_from_slice(&code.to_ne_bytes());
        v
    }

    #[test]
    fn acks_and_errors() {
        assert_eq!(parse_ack(&error_msg(5, 0), 5), Ok(Some(Ok(()))));
        assert_eq!(
            parse_ack(&error_msg(5, -95), 5),
            Ok(Some(Err(RtnlError::Refused(nix::Error::EOPNOTSUPP))))
        );
        assert_eq!(
            parse_ack(&error_msg(4, 0), 5),
            Ok(None),
            "other sequence ignored"
        );
        let mut bad = error_msg(5, 0);
        bad[0..4].copy_from_slice(&400u32.to_ne_bytes());
        assert_eq!(
            parse_ack(&bad, 5),
            Err(RtnlError::Malformed("bad message length"))
        );
    }
}
