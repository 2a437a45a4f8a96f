//! The part of upstream's Service allocation a policy can decide at create: a requested
//! cluster IP outside `--service-cluster-ip-range`, or a requested NodePort outside
//! `--service-node-port-range`, is refused by the apiserver with upstream's message
//! (pkg/registry/core/service/ipallocator `ErrNotInRange`, portallocator `ErrNotInRange`),
//! instead of being reported after the fact by the service allocator. Whether an address
//! or port is free depends on other objects, which a policy cannot read: that stays the
//! allocator's (rekube-controllers' `service-allocator-controller`).
//!
//! The ranges are the controllers' flags, so the policy lives in the Helm chart only
//! (`templates/service-ranges.yaml`, see [`crate::generate`]), where Helm fills the
//! placeholders from the same values as the flags.
use serde_json::{Value, json};

use crate::GROUP;

/// Where the ranges go: Helm variables in the chart (they hold no quote, so they are safe
/// in CEL string literals), literal values in tests.
pub struct Ranges<'a> {
    pub policy_name: &'a str,
    /// The cluster IP CIDRs, comma-separated (the flag's value; empty: no IP check).
    pub ip_ranges: &'a str,
    pub port_min: &'a str,
    pub port_max: &'a str,
}

/// The policy and its binding, in apply order.
pub fn objects(r: &Ranges) -> Vec<Value> {
    let in_range = |x: &str| {
        format!(
            "variables.ipRanges.exists(r, cidr(r).containsIP({x}) && cidr(r).masked().ip() != ip({x}))"
        )
    };
    let port_ok = |p: &str| format!("({p} >= {0} && {p} <= {1})", r.port_min, r.port_max);
    let valid_ports = format!("{}-{}", r.port_min, r.port_max);
    let variables = json!([
        {"name": "ipRanges", "expression": format!(
            "'{}'.split(',').map(s, s.trim()).filter(s, s != '')", r.ip_ranges)},
        {"name": "ips", "expression":
            "object.spec.?clusterIPs.orValue([]).size() > 0 ? object.spec.clusterIPs : \
             (object.spec.?clusterIP.orValue('') == '' ? [] : [object.spec.clusterIP])"},
        {"name": "badIPs", "expression": format!(
            "variables.ipRanges.size() == 0 ? [] : \
             variables.ips.filter(x, x != 'None' && isIP(x) && !({}))", in_range("x"))},
        {"name": "ports", "expression": "object.spec.?ports.orValue([])"},
        {"name": "badPorts", "expression": format!(
            "variables.ports.filter(p, p.?nodePort.orValue(0) != 0 && !{})",
            port_ok("p.nodePort"))},
    ]);
    let ip_message = "'spec.clusterIPs: Invalid value: [\"' + variables.ips.join('\", \"') + \
         '\"]: failed to allocate IP ' + variables.badIPs[0] + ': ' + \
         (variables.ipRanges.exists(r, cidr(r).ip().family() == ip(variables.badIPs[0]).family()) ? \
         'the provided IP (' + variables.badIPs[0] + ') is not in the valid range. The range of valid IPs is ' + \
         variables.ipRanges.filter(r, cidr(r).ip().family() == ip(variables.badIPs[0]).family())[0] : \
         'IPv' + string(ip(variables.badIPs[0]).family()) + ' is not configured on this cluster')";
    let port_message = format!(
        "'spec.ports[' + string(variables.ports.indexOf(variables.badPorts[0])) + \
         '].nodePort: Invalid value: ' + string(variables.badPorts[0].nodePort) + \
         ': provided port is not in the valid range. The range of valid ports is {valid_ports}'"
    );
    let health_message = format!(
        "'failed to allocate requested HealthCheck NodePort ' + \
         string(object.spec.healthCheckNodePort) + \
         ': provided port is not in the valid range. The range of valid ports is {valid_ports}'"
    );
    let name = r.policy_name;
    vec![
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": { "name": name },
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": { "resourceRules": [{
                    "apiGroups": [GROUP], "apiVersions": ["v1"],
                    "resources": ["services"], "operations": ["CREATE"],
                }]},
                "matchConditions": [{
                    "name": "not-external-name",
                    "expression": "object.spec.?type.orValue('ClusterIP') != 'ExternalName'",
                }],
                "variables": variables,
                "validations": [
                    {"expression": "variables.badIPs.size() == 0",
                     "messageExpression": ip_message, "reason": "Invalid"},
                    {"expression": "variables.badPorts.size() == 0",
                     "messageExpression": port_message, "reason": "Invalid"},
                    {"expression": format!(
                        "object.spec.?healthCheckNodePort.orValue(0) == 0 || {}",
                        port_ok("object.spec.healthCheckNodePort")),
                     "messageExpression": health_message, "reason": "Invalid"},
                ],
            },
        }),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": { "name": name },
            "spec": { "policyName": name, "validationActions": ["Deny"] },
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chart's placeholders hold no quote; the generated expressions keep them inside
    /// CEL string literals or as bare numbers.
    #[test]
    fn placeholders_land_where_helm_can_fill_them() {
        let objs = objects(&Ranges {
            policy_name: "{{ $name }}",
            ip_ranges: "{{ $ipRanges }}",
            port_min: "{{ $portMin }}",
            port_max: "{{ $portMax }}",
        });
        let text = serde_json::to_string(&objs).unwrap();
        assert!(text.contains("'{{ $ipRanges }}'.split(',')"));
        assert!(text.contains("p.nodePort >= {{ $portMin }} && p.nodePort <= {{ $portMax }}"));
        assert_eq!(objs[1]["spec"]["policyName"], "{{ $name }}");
    }
}
