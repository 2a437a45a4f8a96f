//! Names of the per-service and per-endpoint chains and sets (proxier.go
//! `servicePortChainNameBase`, `servicePortEndpointChainNameBase`, `hashAndTruncate`):
//! `HASH-namespace/service/protocol/port[__ip/port]`, the hash being the first 8 base32
//! characters of the name's SHA-256, so names stay unique and visually distinct. Every
//! such name holds a `/`, which none of the fixed chains does (`is_service_chain_name`).

use sha2::{Digest, Sha256};

use crate::proxy::types::{EndpointInfo, ServicePortName};

/// knftables' `NameLengthMax`.
const NAME_LENGTH_MAX: usize = 256;
/// The longest prefix (`service-`, `endpoint-`, ...) including its hyphen.
const CHAIN_NAME_PREFIX_LENGTH_MAX: usize = 16;
const CHAIN_NAME_BASE_LENGTH_MAX: usize = NAME_LENGTH_MAX - CHAIN_NAME_PREFIX_LENGTH_MAX;

pub const SERVICE_PORT_POLICY_CLUSTER_CHAIN_PREFIX: &str = "service-";
pub const SERVICE_PORT_POLICY_LOCAL_CHAIN_PREFIX: &str = "local-";
pub const SERVICE_EXTERNAL_CHAIN_PREFIX: &str = "external-";
pub const SERVICE_PORT_ENDPOINT_CHAIN_PREFIX: &str = "endpoint-";
pub const SERVICE_PORT_ENDPOINT_AFFINITY_PREFIX: &str = "affinity-";
pub const SERVICE_PORT_FIREWALL_CHAIN_PREFIX: &str = "firewall-";

/// RFC 4648 base32 of the first five bytes (eight characters, no padding needed).
fn base32_prefix(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let bits = bytes[..5]
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    (0..8)
        .map(|i| ALPHABET[((bits >> (35 - 5 * i)) & 0x1f) as usize] as char)
        .collect()
}

/// Prefixes the name with a hash of itself and cuts it to the longest base name.
pub fn hash_and_truncate(name: &str) -> String {
    let hash = Sha256::digest(name.as_bytes());
    let mut name = format!("{}-{name}", base32_prefix(&hash));
    if name.len() > CHAIN_NAME_BASE_LENGTH_MAX {
        name.truncate(CHAIN_NAME_BASE_LENGTH_MAX - 3);
        name.push_str("...");
    }
    name
}

/// `HASH-namespace/service/protocol/port`, e.g. `ULMVA6XW-ns1/svc1/tcp/p80`.
pub fn service_port_chain_name_base(name: &ServicePortName) -> String {
    hash_and_truncate(&format!(
        "{}/{}/{}/{}",
        name.service.namespace,
        name.service.name,
        name.protocol.lower(),
        name.port
    ))
}

/// `HASH-namespace/service/protocol/port__ip/port` for an endpoint written `ip:port` or
/// `[ip6]:port`, e.g. `5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80`; an IPv6 address's colons
/// become dots.
pub fn service_port_endpoint_chain_name_base(name: &ServicePortName, endpoint: &str) -> String {
    let (ip, port) = endpoint.rsplit_once(':').unwrap_or((endpoint, ""));
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    hash_and_truncate(&format!(
        "{}/{}/{}/{}__{}/{}",
        name.service.namespace,
        name.service.name,
        name.protocol.lower(),
        name.port,
        ip.replace(':', "."),
        port
    ))
}

/// The chains of one service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortChains {
    pub cluster_policy: String,
    pub local_policy: String,
    pub external: String,
    pub firewall: String,
}

impl ServicePortChains {
    pub fn new(name: &ServicePortName) -> Self {
        let base = service_port_chain_name_base(name);
        ServicePortChains {
            cluster_policy: format!("{SERVICE_PORT_POLICY_CLUSTER_CHAIN_PREFIX}{base}"),
            local_policy: format!("{SERVICE_PORT_POLICY_LOCAL_CHAIN_PREFIX}{base}"),
            external: format!("{SERVICE_EXTERNAL_CHAIN_PREFIX}{base}"),
            firewall: format!("{SERVICE_PORT_FIREWALL_CHAIN_PREFIX}{base}"),
        }
    }
}

/// An endpoint's chain and its session affinity set.
pub fn endpoint_chain_and_affinity_set(
    name: &ServicePortName,
    endpoint: &EndpointInfo,
) -> (String, String) {
    let base = service_port_endpoint_chain_name_base(name, &endpoint.to_string());
    (
        format!("{SERVICE_PORT_ENDPOINT_CHAIN_PREFIX}{base}"),
        format!("{SERVICE_PORT_ENDPOINT_AFFINITY_PREFIX}{base}"),
    )
}

/// A per-service or per-endpoint chain (the only chains with a `/`).
pub fn is_service_chain_name(chain: &str) -> bool {
    chain.contains('/')
}

/// A per-endpoint session affinity set.
pub fn is_affinity_set_name(set: &str) -> bool {
    set.starts_with(SERVICE_PORT_ENDPOINT_AFFINITY_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::types::Protocol;

    const LONG_NS: &str = "very-long-namespace-name-abcdefghijklmnopqrstuvwxyz0123456789xx";
    const LONG_SVC: &str = "very-long-service-name-why-would-you-even-do-this-i-mean-really";
    const LONG_PORT: &str = "port-443-providing-the-hypertext-transmission-protocol-with-tls";

    /// Upstream's Test_servicePortChainNameBase.
    #[test]
    fn test_service_port_chain_name_base() {
        let cases = [
            (
                "simple",
                ServicePortName::new("testing", "service", "http", Protocol::Tcp),
                "P4ZYZVCF-testing/service/tcp/http".to_string(),
            ),
            (
                "different port, different hash",
                ServicePortName::new("testing", "service", "https", Protocol::Tcp),
                "LZBRENCP-testing/service/tcp/https".to_string(),
            ),
            (
                "max length",
                ServicePortName::new(LONG_NS, LONG_SVC, LONG_PORT, Protocol::Sctp),
                format!("KR6NACJP-{LONG_NS}/{LONG_SVC}/sctp/{LONG_PORT}"),
            ),
        ];
        for (name, spn, expected) in cases {
            assert_eq!(service_port_chain_name_base(&spn), expected, "{name}");
        }
    }

    /// Upstream's Test_servicePortEndpointChainNameBase.
    #[test]
    fn test_service_port_endpoint_chain_name_base() {
        let http = ServicePortName::new("testing", "service", "http", Protocol::Tcp);
        let long = ServicePortName::new(LONG_NS, LONG_SVC, LONG_PORT, Protocol::Sctp);
        let cases = [
            (
                "simple",
                &http,
                "10.180.0.1:80",
                "JO2XBXZR-testing/service/tcp/http__10.180.0.1/80".to_string(),
            ),
            (
                "different endpoint, different hash",
                &http,
                "10.180.0.2:80",
                "5S6H3H22-testing/service/tcp/http__10.180.0.2/80".to_string(),
            ),
            (
                "ipv6",
                &http,
                "[fd80:abcd:12::a1b2:c3d4:e5f6:9999]:80",
                "U7E2ET36-testing/service/tcp/http__fd80.abcd.12..a1b2.c3d4.e5f6.9999/80"
                    .to_string(),
            ),
            (
                "max length without truncation",
                &long,
                "[1234:5678:9abc:def0::abc:1234]:443",
                format!(
                    "5YS7AFEA-{LONG_NS}/{LONG_SVC}/sctp/{LONG_PORT}__1234.5678.9abc.def0..abc.1234/443"
                ),
            ),
            (
                "truncated, 1",
                &long,
                "[1234:5678:9abc:def0::abcd:1234:5678]:443",
                format!(
                    "CI6C53Q3-{LONG_NS}/{LONG_SVC}/sctp/{LONG_PORT}__1234.5678.9abc.def0..abcd.1234..."
                ),
            ),
            (
                "truncated, 2 (different IP, which is not visible in the result)",
                &long,
                "[1234:5678:9abc:def0::abcd:1234:8765]:443",
                format!(
                    "2FLXFK6X-{LONG_NS}/{LONG_SVC}/sctp/{LONG_PORT}__1234.5678.9abc.def0..abcd.1234..."
                ),
            ),
        ];
        for (name, spn, endpoint, expected) in cases {
            assert_eq!(
                service_port_endpoint_chain_name_base(spn, endpoint),
                expected,
                "{name}"
            );
        }
    }
}
