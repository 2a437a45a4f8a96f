//! Stale conntrack entries of UDP Services (pkg/proxy/conntrack): a UDP "connection"
//! keeps its DNAT as long as packets flow, so after an endpoint is removed, its clients
//! would keep sending to it. After each sync the proxier lists the UDP entries and deletes
//! those to a Service's IP:port (or NodePort) whose reply source is not a serving endpoint
//! ([`cleanup::stale_entry_filters`], pure), through Debian's `conntrack` tool
//! ([`exec::ConntrackTool`]).

pub mod cleanup;
pub mod exec;

use std::net::IpAddr;

use crate::proxy::types::Protocol;

/// One side of a conntrack entry (netlink's `IPTuple`).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tuple {
    pub src_ip: Option<IpAddr>,
    pub dst_ip: Option<IpAddr>,
    pub src_port: u16,
    pub dst_port: u16,
}

/// A conntrack entry (netlink's `ConntrackFlow`): the original direction and the reply.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub protocol: Protocol,
    pub original: Tuple,
    pub reply: Tuple,
}

/// Upstream's `conntrackFilter`: what a deletion matches (unset fields match anything).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Filter {
    pub protocol: Protocol,
    pub orig_dst_ip: Option<IpAddr>,
    pub orig_dst_port: Option<u16>,
    pub reply_src_ip: Option<IpAddr>,
    pub reply_src_port: Option<u16>,
}

impl Filter {
    pub fn matches(&self, e: &Entry) -> bool {
        fn eq<T: PartialEq>(want: &Option<T>, got: T) -> bool {
            want.as_ref().is_none_or(|w| *w == got)
        }
        self.protocol == e.protocol
            && (self.orig_dst_ip.is_none() || self.orig_dst_ip == e.original.dst_ip)
            && eq(&self.orig_dst_port, e.original.dst_port)
            && (self.reply_src_ip.is_none() || self.reply_src_ip == e.reply.src_ip)
            && eq(&self.reply_src_port, e.reply.src_port)
    }
}

/// The kernel's conntrack table behind a trait (upstream's `conntrack.Interface`).
pub trait Conntrack {
    /// The entries of one protocol and family.
    fn list(
        &self,
        family: crate::proxy::types::IpFamily,
        protocol: Protocol,
    ) -> Result<Vec<Entry>, ConntrackError>;
    /// Deletes the entries each filter matches; returns how many went.
    fn clear(
        &self,
        family: crate::proxy::types::IpFamily,
        filters: &[Filter],
    ) -> Result<usize, ConntrackError>;
}

#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error("conntrack is not installed (Debian's conntrack package)")]
    Missing,
    #[error("conntrack {args}: {message}")]
    Failed { args: String, message: String },
}
