//! Chain names of the iptables mode (pkg/proxy/iptables/proxier.go `portProtoHash`,
//! `servicePortPolicyClusterChain`, `servicePortEndpointChainName`, ...): a prefix and the
//! first 16 characters of the base32 SHA-256 of the service port's name and protocol
//! (and endpoint), as upstream hashes them, so a name stays under iptables' 28
//! characters. The prefixes are rekube's own (`REKUBE-` where upstream writes `KUBE-`):
//! a real kube-proxy on the same host owns the `KUBE-*` chains, and the agent never
//! touches a chain it does not own.

use sha2::{Digest, Sha256};

/// Every chain of the iptables mode starts with this; nothing else does.
pub const CHAIN_PREFIX: &str = "REKUBE-";

/// iptables' longest chain name (`XT_EXTENSION_MAXNAMELEN` - 1).
pub const CHAIN_NAME_MAX: usize = 28;

// The fixed chains (upstream's `kube*Chain` constants, renamed).
pub const SERVICES_CHAIN: &str = "REKUBE-SERVICES";
pub const EXTERNAL_SERVICES_CHAIN: &str = "REKUBE-EXTERNAL-SERVICES";
pub const NODE_PORTS_CHAIN: &str = "REKUBE-NODEPORTS";
pub const POSTROUTING_CHAIN: &str = "REKUBE-POSTROUTING";
pub const MARK_MASQ_CHAIN: &str = "REKUBE-MARK-MASQ";
pub const FORWARD_CHAIN: &str = "REKUBE-FORWARD";
pub const PROXY_FIREWALL_CHAIN: &str = "REKUBE-PROXY-FIREWALL";
/// Upstream's copy of the kubelet's anti-martian chain (`KUBE-FIREWALL`), written only
/// with localhost NodePorts.
pub const LOCALNET_FIREWALL_CHAIN: &str = "REKUBE-FIREWALL";

pub const SERVICE_PORT_POLICY_CLUSTER_CHAIN_PREFIX: &str = "REKUBE-SVC-";
pub const SERVICE_PORT_POLICY_LOCAL_CHAIN_PREFIX: &str = "REKUBE-SVL-";
pub const SERVICE_FIREWALL_CHAIN_PREFIX: &str = "REKUBE-FW-";
pub const SERVICE_EXTERNAL_CHAIN_PREFIX: &str = "REKUBE-EXT-";
pub const SERVICE_PORT_ENDPOINT_CHAIN_PREFIX: &str = "REKUBE-SEP-";

/// Go's `base32.StdEncoding.EncodeToString(hash)[:16]`: the first 16 characters encode
/// the first 10 bytes.
fn base32_16(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let bits = bytes[..10]
        .iter()
        .fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
    (0..16)
        .map(|i| ALPHABET[((bits >> (75 - 5 * i)) & 0x1f) as usize] as char)
        .collect()
}

/// Upstream's `portProtoHash`: `servicePortName` is `ns/name:port` (`ServicePortName.String`),
/// `protocol` lower case.
pub fn port_proto_hash(service_port_name: &str, protocol: &str) -> String {
    base32_16(&Sha256::digest(
        format!("{service_port_name}{protocol}").as_bytes(),
    ))
}

/// `REKUBE-SVC-<hash>`: the Cluster-policy endpoints of a service port.
pub fn service_port_policy_cluster_chain(service_port_name: &str, protocol: &str) -> String {
    format!(
        "{SERVICE_PORT_POLICY_CLUSTER_CHAIN_PREFIX}{}",
        port_proto_hash(service_port_name, protocol)
    )
}

/// `REKUBE-SVL-<hash>`: the Local-policy endpoints.
pub fn service_port_policy_local_chain(service_port_name: &str, protocol: &str) -> String {
    format!(
        "{SERVICE_PORT_POLICY_LOCAL_CHAIN_PREFIX}{}",
        port_proto_hash(service_port_name, protocol)
    )
}

/// `REKUBE-FW-<hash>`: loadBalancerSourceRanges.
pub fn service_firewall_chain(service_port_name: &str, protocol: &str) -> String {
    format!(
        "{SERVICE_FIREWALL_CHAIN_PREFIX}{}",
        port_proto_hash(service_port_name, protocol)
    )
}

/// `REKUBE-EXT-<hash>`: NodePort, ExternalIP and LoadBalancer traffic.
pub fn service_external_chain(service_port_name: &str, protocol: &str) -> String {
    format!(
        "{SERVICE_EXTERNAL_CHAIN_PREFIX}{}",
        port_proto_hash(service_port_name, protocol)
    )
}

/// `REKUBE-SEP-<hash>` of one endpoint (`ip:port` or `[ip6]:port`).
pub fn service_port_endpoint_chain(
    service_port_name: &str,
    protocol: &str,
    endpoint: &str,
) -> String {
    let hash = Sha256::digest(format!("{service_port_name}{protocol}{endpoint}").as_bytes());
    format!("{SERVICE_PORT_ENDPOINT_CHAIN_PREFIX}{}", base32_16(&hash))
}

/// A per-service or per-endpoint chain (upstream's `isServiceChainName`).
pub fn is_service_chain_name(chain: &str) -> bool {
    [
        SERVICE_PORT_POLICY_CLUSTER_CHAIN_PREFIX,
        SERVICE_PORT_POLICY_LOCAL_CHAIN_PREFIX,
        SERVICE_PORT_ENDPOINT_CHAIN_PREFIX,
        SERVICE_FIREWALL_CHAIN_PREFIX,
        SERVICE_EXTERNAL_CHAIN_PREFIX,
    ]
    .iter()
    .any(|p| chain.starts_with(p))
}

/// A chain of rekube's iptables mode (fixed or per-service).
pub fn is_rekube_chain(chain: &str) -> bool {
    chain.starts_with(CHAIN_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hashes upstream's proxier_test.go expects (TestOverallIPTablesRules).
    #[test]
    fn hashes_are_upstreams() {
        assert_eq!(port_proto_hash("ns1/svc1:p80", "tcp"), "XPGD46QRK7WJZT7O");
        assert_eq!(port_proto_hash("ns5/svc5:p80", "tcp"), "NUKIZ6OKUXPJNT4C");
        assert_eq!(
            service_port_endpoint_chain("ns1/svc1:p80", "tcp", "10.180.0.1:80"),
            "REKUBE-SEP-SXIVWICOYRO3J4NJ"
        );
    }

    #[test]
    fn names_fit_iptables_limit_and_are_recognised() {
        let names = [
            service_port_policy_cluster_chain("a/b:c", "udp"),
            service_port_policy_local_chain("a/b:c", "udp"),
            service_firewall_chain("a/b:c", "udp"),
            service_external_chain("a/b:c", "udp"),
            service_port_endpoint_chain("a/b:c", "udp", "[fd00::1]:53"),
        ];
        for n in &names {
            assert!(n.len() <= CHAIN_NAME_MAX, "{n}");
            assert!(is_service_chain_name(n) && is_rekube_chain(n), "{n}");
        }
        for fixed in [
            SERVICES_CHAIN,
            EXTERNAL_SERVICES_CHAIN,
            NODE_PORTS_CHAIN,
            POSTROUTING_CHAIN,
            MARK_MASQ_CHAIN,
            FORWARD_CHAIN,
            PROXY_FIREWALL_CHAIN,
            LOCALNET_FIREWALL_CHAIN,
        ] {
            assert!(fixed.len() <= CHAIN_NAME_MAX && !is_service_chain_name(fixed));
        }
        assert!(!is_rekube_chain("KUBE-SVC-XPGD46QRK7WJZT7O"));
    }
}
