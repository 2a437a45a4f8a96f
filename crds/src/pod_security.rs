//! Pod Security Standards for rekube pods: upstream's PodSecurity admission
//! (k8s.io/pod-security-admission) as three ValidatingAdmissionPolicies, one per mode.
//!
//! - `enforce` refuses a rekube Pod that violates its namespace's enforce level
//!   (`violates PodSecurity "baseline:latest": host namespaces (hostNetwork=true), ...`);
//! - `warn` answers a Pod, or the pod template of a Deployment or ReplicaSet, with a
//!   warning (`would violate PodSecurity "restricted:latest": ...`);
//! - `audit` records the same message in the audit log (the Audit action's
//!   `validation.policy.admission.k8s.io/validation_failure` annotation; upstream's key is
//!   `pod-security.kubernetes.io/audit-violations`).
//!
//! The level and version of each mode come from the namespace's labels
//! (`pod-security.kubernetes.io/<mode>` and `<mode>-version`), read from `namespaceObject`
//! as upstream's `PolicyToEvaluate` does: an invalid enforce level counts as restricted, an
//! invalid warn or audit level as privileged, an invalid version as latest, and warn follows
//! an explicit enforce level stronger than its default. Without labels, the cluster-wide
//! defaults apply: [`DEFAULTS`] are placeholders in the generated policies, replaced by
//! rekube's defaults in `crds/` and by chart values in the Helm chart.
//!
//! Every check of upstream's policy package is one CEL variable yielding `[]` or
//! `["reason (detail)"]` with upstream's text, at the versions where upstream applies it;
//! the variables are joined in upstream's order (baseline checks by ID, then restricted
//! ones), so the message is upstream's to the byte. As upstream, a pod update is checked
//! only when it changes an image, the number of containers, or adds an ephemeral container.
use serde_json::{Value, json};

use crate::GROUP;

/// A cluster-wide default: the placeholder in the generated policies, rekube's value
/// (what `kubectl apply -f crds/` installs) and the chart value that replaces it.
pub struct DefaultSetting {
    pub placeholder: &'static str,
    pub rekube: &'static str,
    pub chart_value: &'static str,
}

/// The cluster-wide defaults. Upstream's are privileged and latest for every mode; rekube
/// enforces (and warns and audits) baseline, because a rekube pod is a real container on a
/// real node and a privileged one is root on that node for anyone who may create a
/// Deployment (docs/pod-security.md).
pub const DEFAULTS: [DefaultSetting; 6] = [
    DefaultSetting {
        placeholder: "REKUBE_PSS_ENFORCE_LEVEL",
        rekube: "baseline",
        chart_value: "enforce",
    },
    DefaultSetting {
        placeholder: "REKUBE_PSS_ENFORCE_VERSION",
        rekube: "latest",
        chart_value: "enforceVersion",
    },
    DefaultSetting {
        placeholder: "REKUBE_PSS_WARN_LEVEL",
        rekube: "baseline",
        chart_value: "warn",
    },
    DefaultSetting {
        placeholder: "REKUBE_PSS_WARN_VERSION",
        rekube: "latest",
        chart_value: "warnVersion",
    },
    DefaultSetting {
        placeholder: "REKUBE_PSS_AUDIT_LEVEL",
        rekube: "baseline",
        chart_value: "audit",
    },
    DefaultSetting {
        placeholder: "REKUBE_PSS_AUDIT_VERSION",
        rekube: "latest",
        chart_value: "auditVersion",
    },
];

/// Upstream's exemptions (the PodSecurity plugin's `exemptions` configuration): requests
/// of these users, and pods and workloads in these namespaces or with these runtime
/// classes, are not checked in any mode. Each is a CEL list placeholder: `[]` in `crds/`,
/// the chart's `podSecurity.exemptions.<chart_value>` in the chart.
pub struct Exemption {
    pub placeholder: &'static str,
    pub chart_value: &'static str,
}

pub const EXEMPTIONS: [Exemption; 3] = [
    Exemption {
        placeholder: "REKUBE_PSS_EXEMPT_USERNAMES",
        chart_value: "usernames",
    },
    Exemption {
        placeholder: "REKUBE_PSS_EXEMPT_NAMESPACES",
        chart_value: "namespaces",
    },
    Exemption {
        placeholder: "REKUBE_PSS_EXEMPT_RUNTIME_CLASSES",
        chart_value: "runtimeClasses",
    },
];

/// CEL match condition: the request is not exempt (upstream `exemptNamespace`,
/// `exemptUser`, `exemptRuntimeClass`; a workload's runtime class is its template's).
fn not_exempt() -> String {
    format!(
        "!(request.userInfo.username in {users}) && !(request.namespace in {namespaces}) && \
         !((request.resource.resource == 'pods' ? object.spec.?runtimeClassName.orValue('') : \
         object.spec.template.spec.?runtimeClassName.orValue('')) in {classes})",
        users = EXEMPTIONS[0].placeholder,
        namespaces = EXEMPTIONS[1].placeholder,
        classes = EXEMPTIONS[2].placeholder,
    )
}

/// The audit mode's annotation in the audit log (`<policy name>/audit-violations`).
pub const AUDIT_VIOLATIONS_KEY: &str = "audit-violations";

/// The label prefix upstream reads.
pub const LABEL_PREFIX: &str = "pod-security.kubernetes.io/";

/// The newest version any check changes at: a later version (and `latest`) means this one.
pub const MAX_VERSION_MINOR: u32 = 35;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Enforce,
    Warn,
    Audit,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Warn => "warn",
            Mode::Audit => "audit",
        }
    }

    fn placeholder(self, version: bool) -> &'static str {
        let i = match self {
            Mode::Enforce => 0,
            Mode::Warn => 2,
            Mode::Audit => 4,
        } + usize::from(version);
        DEFAULTS[i].placeholder
    }

    /// The policy's (and binding's) name.
    pub fn policy_name(self) -> String {
        format!("rekube-pod-security-{}.rekube.io", self.name())
    }
}

const LEVELS: &str = "['privileged', 'baseline', 'restricted']";
const RANK: &str = "{'privileged': 0, 'baseline': 1, 'restricted': 2}";
const VERSION_RE: &str = "'^v1[.](0|[1-9][0-9]*)$'";

/// CEL: the labels' value for `key` parsed as a level (`None` if absent), invalid as `invalid`.
fn level_of(key: &str, invalid: &str, default: &str) -> String {
    format!(
        "'{LABEL_PREFIX}{key}' in variables.labels ? \
         (variables.labels['{LABEL_PREFIX}{key}'] in {LEVELS} ? variables.labels['{LABEL_PREFIX}{key}'] : '{invalid}') : \
         '{default}'"
    )
}

/// CEL: the labels' version for `key` (invalid: latest), or `default` without the label.
fn version_of(key: &str, default: &str) -> String {
    format!(
        "'{LABEL_PREFIX}{key}' in variables.labels ? \
         (variables.labels['{LABEL_PREFIX}{key}'] == 'latest' || \
          variables.labels['{LABEL_PREFIX}{key}'].matches({VERSION_RE}) ? variables.labels['{LABEL_PREFIX}{key}'] : 'latest') : \
         '{default}'"
    )
}

fn var(name: &str, expression: impl Into<String>) -> Value {
    json!({ "name": name, "expression": expression.into() })
}

/// CEL: `singular` or `plural` by the count `n`.
fn plural(singular: &str, plural: &str, n: &str) -> String {
    format!("({n} == 1 ? '{singular}' : '{plural}')")
}

/// CEL: upstream's joinQuote, `"a", "b"`.
fn quoted(list: &str) -> String {
    format!("('\"' + {list}.join('\", \"') + '\"')")
}

/// CEL: `container "a"` / `containers "a", "b"` for a list of names.
fn containers_phrase(names: &str) -> String {
    format!(
        "{} + ' ' + {}",
        plural("container", "containers", &format!("size({names})")),
        quoted(names)
    )
}

/// CEL: the check's result, `[]` or `['reason (detail)']`.
fn result(applies: &str, failed: &str, reason: &str, detail: &str) -> String {
    format!("({applies}) && ({failed}) ? [{reason} + ' (' + {detail} + ')'] : []")
}

/// CEL: the names of the visited containers (init, regular, ephemeral) matching `cond` on `c`.
fn bad_names(cond: &str) -> String {
    format!("variables.containers.filter(c, {cond}).map(c, c.name)")
}

const C: &str = "variables.containers";
const PSC: &str = "variables.psc";

/// CEL: the setters phrase (`pod and containers "a"`) from a pod flag and container names.
fn setters(pod: &str, names: &str) -> String {
    format!(
        "(({pod}) ? ['pod'] : []) + (size({names}) > 0 ? [{}] : [])",
        containers_phrase(names)
    )
}

/// The variables that evaluate every check, in upstream's order, ending with `violations`.
fn check_variables() -> Vec<Value> {
    let mut v = Vec::new();
    let mut results = Vec::new();
    let mut check = |v: &mut Vec<Value>, id: &str, expression: String| {
        let name = format!("check_{id}");
        v.push(var(&name, expression));
        results.push(format!("variables.{name}"));
    };

    // appArmorProfile (baseline, 1.0+)
    let aa_ok = |t: &str| format!("({t}.?type.orValue('') in ['RuntimeDefault', 'Localhost'])");
    let aa_bad_c = format!(
        "c.?securityContext.?appArmorProfile.hasValue() && !{}",
        aa_ok("c.securityContext.appArmorProfile")
    );
    v.push(var(
        "aaPod",
        format!(
            "{PSC}.?appArmorProfile.hasValue() && !{}",
            aa_ok(&format!("{PSC}.appArmorProfile"))
        ),
    ));
    v.push(var("aaContainers", bad_names(&aa_bad_c)));
    v.push(var(
        "aaValues",
        format!(
            "((variables.aaPod ? [{PSC}.appArmorProfile.?type.orValue('')] : []) + \
             {C}.filter(c, {aa_bad_c}).map(c, c.securityContext.appArmorProfile.?type.orValue(''))).distinct().sort()"
        ),
    ));
    v.push(var(
        "aaAnnotations",
        "variables.annotations.filter(k, k.startsWith('container.apparmor.security.beta.kubernetes.io/') && \
         !(variables.annotations[k] == '' || variables.annotations[k] == 'runtime/default' || \
         variables.annotations[k].startsWith('localhost/'))).map(k, k + '=' + strings.quote(variables.annotations[k])).sort()",
    ));
    v.push(var(
        "aaSetters",
        format!(
            "{} + (size(variables.aaAnnotations) > 0 ? [{}] : [])",
            setters("variables.aaPod", "variables.aaContainers"),
            plural("annotation", "annotations", "size(variables.aaAnnotations)")
        ),
    ));
    v.push(var(
        "aaList",
        "variables.aaValues + variables.aaAnnotations",
    ));
    check(
        &mut v,
        "appArmorProfile",
        result(
            "variables.baseline",
            "size(variables.aaSetters) > 0",
            &plural(
                "forbidden AppArmor profile",
                "forbidden AppArmor profiles",
                "size(variables.aaList)",
            ),
            &format!(
                "variables.aaSetters.join(' and ') + ' must not set AppArmor profile type to ' + {}",
                quoted("variables.aaList")
            ),
        ),
    );

    // capabilities_baseline (baseline, 1.0+; overridden in restricted by capabilities_restricted from 1.22)
    const CAPS: &str = "['AUDIT_WRITE', 'CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'FSETID', 'KILL', 'MKNOD', \
        'NET_BIND_SERVICE', 'SETFCAP', 'SETGID', 'SETPCAP', 'SETUID', 'SYS_CHROOT']";
    let adds = "c.?securityContext.?capabilities.?add.orValue([])";
    v.push(var(
        "capbContainers",
        bad_names(&format!("{adds}.exists(a, !(a in {CAPS}))")),
    ));
    v.push(var(
        "capbCaps",
        format!("{C}.map(c, {adds}.filter(a, !(a in {CAPS}))).flatten().distinct().sort()"),
    ));
    check(
        &mut v,
        "capabilities_baseline",
        result(
            "variables.level == 'baseline' || (variables.restricted && variables.minor < 22)",
            "size(variables.capbContainers) > 0",
            "'non-default capabilities'",
            &format!(
                "{} + ' must not include ' + {} + ' in securityContext.capabilities.add'",
                containers_phrase("variables.capbContainers"),
                quoted("variables.capbCaps")
            ),
        ),
    );

    // hostNamespaces (baseline, 1.0+)
    v.push(var(
        "hostNamespaces",
        "(variables.spec.?hostNetwork.orValue(false) ? ['hostNetwork=true'] : []) + \
         (variables.spec.?hostPID.orValue(false) ? ['hostPID=true'] : []) + \
         (variables.spec.?hostIPC.orValue(false) ? ['hostIPC=true'] : [])",
    ));
    check(
        &mut v,
        "hostNamespaces",
        result(
            "variables.baseline",
            "size(variables.hostNamespaces) > 0",
            "'host namespaces'",
            "variables.hostNamespaces.join(', ')",
        ),
    );

    // hostPathVolumes (baseline, 1.0+; overridden in restricted by restrictedVolumes)
    v.push(var(
        "hostPathVolumes",
        "variables.volumes.filter(v, has(v.hostPath)).map(v, v.name)",
    ));
    check(
        &mut v,
        "hostPathVolumes",
        result(
            "variables.level == 'baseline'",
            "size(variables.hostPathVolumes) > 0",
            "'hostPath volumes'",
            &format!(
                "{} + ' ' + {}",
                plural("volume", "volumes", "size(variables.hostPathVolumes)"),
                quoted("variables.hostPathVolumes")
            ),
        ),
    );

    // hostPorts (baseline, 1.0+)
    let ports = "c.?ports.orValue([])";
    v.push(var(
        "hostPortContainers",
        bad_names(&format!("{ports}.exists(p, p.?hostPort.orValue(0) != 0)")),
    ));
    v.push(var(
        "hostPorts",
        format!(
            "{C}.map(c, {ports}.filter(p, p.?hostPort.orValue(0) != 0).map(p, string(p.hostPort))).flatten().distinct().sort()"
        ),
    ));
    check(
        &mut v,
        "hostPorts",
        result(
            "variables.baseline",
            "size(variables.hostPortContainers) > 0",
            "'hostPort'",
            &format!(
                "{} + ' ' + {} + ' ' + {} + ' ' + variables.hostPorts.join(', ')",
                containers_phrase("variables.hostPortContainers"),
                plural("uses", "use", "size(variables.hostPortContainers)"),
                plural("hostPort", "hostPorts", "size(variables.hostPorts)")
            ),
        ),
    );

    // hostProbesAndHostLifecycle (baseline, 1.34+)
    let hosts = "[?c.?livenessProbe.?httpGet.?host, ?c.?livenessProbe.?tcpSocket.?host, \
        ?c.?readinessProbe.?httpGet.?host, ?c.?readinessProbe.?tcpSocket.?host, \
        ?c.?startupProbe.?httpGet.?host, ?c.?startupProbe.?tcpSocket.?host, \
        ?c.?lifecycle.?postStart.?httpGet.?host, ?c.?lifecycle.?postStart.?tcpSocket.?host, \
        ?c.?lifecycle.?preStop.?httpGet.?host, ?c.?lifecycle.?preStop.?tcpSocket.?host].filter(h, h != '')";
    v.push(var(
        "probeHostContainers",
        format!(
            "{}.distinct().sort()",
            bad_names(&format!("size({hosts}) > 0"))
        ),
    ));
    v.push(var(
        "probeHosts",
        format!("{C}.map(c, {hosts}).flatten().distinct().sort()"),
    ));
    check(
        &mut v,
        "hostProbesAndHostLifecycle",
        result(
            "variables.baseline && variables.minor >= 34",
            "size(variables.probeHostContainers) > 0",
            "'probe or lifecycle host'",
            &format!(
                "{} + ' ' + {} + ' ' + {} + ' ' + {}",
                containers_phrase("variables.probeHostContainers"),
                plural("uses", "use", "size(variables.probeHostContainers)"),
                plural(
                    "probe or lifecycle host",
                    "probe or lifecycle hosts",
                    "size(variables.probeHosts)"
                ),
                quoted("variables.probeHosts")
            ),
        ),
    );

    // privileged (baseline, 1.0+)
    v.push(var(
        "privilegedContainers",
        bad_names("c.?securityContext.?privileged.orValue(false)"),
    ));
    check(
        &mut v,
        "privileged",
        result(
            "variables.baseline",
            "size(variables.privilegedContainers) > 0",
            "'privileged'",
            &format!(
                "{} + ' must not set securityContext.privileged=true'",
                containers_phrase("variables.privilegedContainers")
            ),
        ),
    );

    // procMount (baseline, 1.0+, relaxed for user-namespaced pods from 1.35; in restricted
    // until 1.34, then procMount_restricted, which is never relaxed)
    let pm_bad = "c.?securityContext.?procMount.orValue('Default') != 'Default'";
    v.push(var("procMountContainers", bad_names(pm_bad)));
    v.push(var(
        "procMountTypes",
        format!("{C}.filter(c, {pm_bad}).map(c, c.securityContext.procMount).distinct().sort()"),
    ));
    let pm_detail = format!(
        "{} + ' must not set securityContext.procMount to ' + {}",
        containers_phrase("variables.procMountContainers"),
        quoted("variables.procMountTypes")
    );
    check(
        &mut v,
        "procMount",
        result(
            "(variables.level == 'baseline' && !(variables.minor >= 35 && variables.userNamespace)) || \
             (variables.restricted && variables.minor < 35)",
            "size(variables.procMountContainers) > 0",
            "'procMount'",
            &pm_detail,
        ),
    );

    // seLinuxOptions (baseline, 1.0+; container_engine_t allowed from 1.31)
    let se_invalid = |o: &str| {
        format!(
            "(!({o}.?type.orValue('') in variables.seLinuxTypes) || {o}.?user.orValue('') != '' || {o}.?role.orValue('') != '')"
        )
    };
    v.push(var(
        "seLinuxTypes",
        "['', 'container_t', 'container_init_t', 'container_kvm_t'] + (variables.minor >= 31 ? ['container_engine_t'] : [])",
    ));
    v.push(var(
        "seLinuxPod",
        format!(
            "{PSC}.?seLinuxOptions.hasValue() && {}",
            se_invalid(&format!("{PSC}.seLinuxOptions"))
        ),
    ));
    v.push(var(
        "seLinuxContainers",
        bad_names(&format!(
            "c.?securityContext.?seLinuxOptions.hasValue() && {}",
            se_invalid("c.securityContext.seLinuxOptions")
        )),
    ));
    v.push(var(
        "seLinuxOptions",
        format!(
            "[?{PSC}.?seLinuxOptions] + {C}.filter(c, c.?securityContext.?seLinuxOptions.hasValue()).map(c, c.securityContext.seLinuxOptions)"
        ),
    ));
    v.push(var(
        "seLinuxBadTypes",
        "variables.seLinuxOptions.map(o, o.?type.orValue('')).filter(t, !(t in variables.seLinuxTypes)).distinct().sort()",
    ));
    v.push(var(
        "seLinuxSetters",
        setters("variables.seLinuxPod", "variables.seLinuxContainers"),
    ));
    v.push(var(
        "seLinuxData",
        format!(
            "(size(variables.seLinuxBadTypes) > 0 ? [{} + ' ' + {}] : []) + \
             (variables.seLinuxOptions.exists(o, o.?user.orValue('') != '') ? ['user may not be set'] : []) + \
             (variables.seLinuxOptions.exists(o, o.?role.orValue('') != '') ? ['role may not be set'] : [])",
            plural("type", "types", "size(variables.seLinuxBadTypes)"),
            quoted("variables.seLinuxBadTypes")
        ),
    ));
    check(
        &mut v,
        "seLinuxOptions",
        result(
            "variables.baseline",
            "size(variables.seLinuxSetters) > 0",
            "'seLinuxOptions'",
            "variables.seLinuxSetters.join(' and ') + ' set forbidden securityContext.seLinuxOptions: ' + variables.seLinuxData.join('; ')",
        ),
    );

    // seccompProfile_baseline (baseline; annotations until 1.18, fields from 1.19; in
    // restricted until 1.18, then seccompProfile_restricted)
    let ann_ok = |a: &str| {
        format!(
            "({a} == 'runtime/default' || {a} == 'docker/default' || {a}.startsWith('localhost/'))"
        )
    };
    let pod_key = "seccomp.security.alpha.kubernetes.io/pod";
    let ckey = "('container.seccomp.security.alpha.kubernetes.io/' + c.name)";
    v.push(var(
        "seccompAnnotations",
        format!(
            "(('{pod_key}' in variables.annotations && !{}) ? ['{pod_key}=' + strings.quote(variables.annotations['{pod_key}'])] : []) + \
             {C}.filter(c, {ckey} in variables.annotations && !{}).map(c, {ckey} + '=' + strings.quote(variables.annotations[{ckey}])).distinct().sort()",
            ann_ok(&format!("variables.annotations['{pod_key}']")),
            ann_ok(&format!("variables.annotations[{ckey}]"))
        ),
    ));
    let sc_ok = |p: &str| format!("({p}.?type.orValue('') in ['Localhost', 'RuntimeDefault'])");
    let sc_bad_c = format!(
        "c.?securityContext.?seccompProfile.hasValue() && !{}",
        sc_ok("c.securityContext.seccompProfile")
    );
    v.push(var(
        "seccompPod",
        format!(
            "{PSC}.?seccompProfile.hasValue() && !{}",
            sc_ok(&format!("{PSC}.seccompProfile"))
        ),
    ));
    v.push(var("seccompContainers", bad_names(&sc_bad_c)));
    v.push(var(
        "seccompValues",
        format!(
            "((variables.seccompPod ? [{PSC}.seccompProfile.?type.orValue('')] : []) + \
             {C}.filter(c, {sc_bad_c}).map(c, c.securityContext.seccompProfile.?type.orValue(''))).distinct().sort()"
        ),
    ));
    v.push(var(
        "seccompSetters",
        setters("variables.seccompPod", "variables.seccompContainers"),
    ));
    let sc_explicit = format!(
        "variables.seccompSetters.join(' and ') + ' must not set securityContext.seccompProfile.type to ' + {}",
        quoted("variables.seccompValues")
    );
    check(
        &mut v,
        "seccompProfile_baseline",
        format!(
            "!(variables.level == 'baseline' || (variables.restricted && variables.minor < 19)) ? [] : \
             variables.minor < 19 ? ({}) : ({})",
            result(
                "true",
                "size(variables.seccompAnnotations) > 0",
                "'seccompProfile'",
                &format!(
                    "'forbidden ' + {} + ' ' + variables.seccompAnnotations.join(', ')",
                    plural(
                        "annotation",
                        "annotations",
                        "size(variables.seccompAnnotations)"
                    )
                )
            ),
            result(
                "true",
                "size(variables.seccompSetters) > 0",
                "'seccompProfile'",
                &sc_explicit
            )
        ),
    );

    // sysctls (baseline; the safe set grows at 1.27, 1.29 and 1.32)
    v.push(var(
        "sysctls",
        format!(
            "{PSC}.?sysctls.orValue([]).map(s, s.name).filter(n, !(n in \
             ['kernel.shm_rmid_forced', 'net.ipv4.ip_local_port_range', 'net.ipv4.tcp_syncookies', \
              'net.ipv4.ping_group_range', 'net.ipv4.ip_unprivileged_port_start'] + \
             (variables.minor >= 27 ? ['net.ipv4.ip_local_reserved_ports'] : []) + \
             (variables.minor >= 29 ? ['net.ipv4.tcp_keepalive_time', 'net.ipv4.tcp_fin_timeout', \
              'net.ipv4.tcp_keepalive_intvl', 'net.ipv4.tcp_keepalive_probes'] : []) + \
             (variables.minor >= 32 ? ['net.ipv4.tcp_rmem', 'net.ipv4.tcp_wmem'] : [])))"
        ),
    ));
    check(
        &mut v,
        "sysctls",
        result(
            "variables.baseline",
            "size(variables.sysctls) > 0",
            "'forbidden sysctls'",
            "variables.sysctls.join(', ')",
        ),
    );

    // windowsHostProcess (baseline, 1.0+)
    v.push(var(
        "hostProcessContainers",
        bad_names("c.?securityContext.?windowsOptions.?hostProcess.orValue(false)"),
    ));
    v.push(var(
        "hostProcessSetters",
        setters(
            &format!("{PSC}.?windowsOptions.?hostProcess.orValue(false)"),
            "variables.hostProcessContainers",
        ),
    ));
    check(
        &mut v,
        "windowsHostProcess",
        result(
            "variables.baseline",
            "size(variables.hostProcessSetters) > 0",
            "'hostProcess'",
            "variables.hostProcessSetters.join(' and ') + ' must not set securityContext.windowsOptions.hostProcess=true'",
        ),
    );

    // allowPrivilegeEscalation (restricted, 1.8+; Windows pods exempt from 1.25)
    v.push(var(
        "escalationContainers",
        bad_names("c.?securityContext.?allowPrivilegeEscalation.orValue(true)"),
    ));
    check(
        &mut v,
        "allowPrivilegeEscalation",
        result(
            "variables.restricted && variables.minor >= 8 && !(variables.minor >= 25 && variables.windows)",
            "size(variables.escalationContainers) > 0",
            "'allowPrivilegeEscalation != false'",
            &format!(
                "{} + ' must set securityContext.allowPrivilegeEscalation=false'",
                containers_phrase("variables.escalationContainers")
            ),
        ),
    );

    // capabilities_restricted (restricted, 1.22+; Windows pods exempt from 1.25)
    v.push(var(
        "dropAllMissing",
        bad_names("!c.?securityContext.?capabilities.?drop.orValue([]).exists(d, d == 'ALL')"),
    ));
    v.push(var(
        "capAdders",
        bad_names(&format!("{adds}.exists(a, a != 'NET_BIND_SERVICE')")),
    ));
    v.push(var(
        "capAdded",
        format!(
            "{C}.map(c, {adds}.filter(a, a != 'NET_BIND_SERVICE')).flatten().distinct().sort()"
        ),
    ));
    v.push(var(
        "capDetails",
        format!(
            "(size(variables.dropAllMissing) > 0 ? [{} + ' must set securityContext.capabilities.drop=[\"ALL\"]'] : []) + \
             (size(variables.capAdders) > 0 ? [{} + ' must not include ' + {} + ' in securityContext.capabilities.add'] : [])",
            containers_phrase("variables.dropAllMissing"),
            containers_phrase("variables.capAdders"),
            quoted("variables.capAdded")
        ),
    ));
    check(
        &mut v,
        "capabilities_restricted",
        result(
            "variables.restricted && variables.minor >= 22 && !(variables.minor >= 25 && variables.windows)",
            "size(variables.capDetails) > 0",
            "'unrestricted capabilities'",
            "variables.capDetails.join('; ')",
        ),
    );

    // procMount_restricted (restricted, 1.35+)
    check(
        &mut v,
        "procMount_restricted",
        result(
            "variables.restricted && variables.minor >= 35",
            "size(variables.procMountContainers) > 0",
            "'procMount'",
            &pm_detail,
        ),
    );

    // restrictedVolumes (restricted, 1.0+)
    const ALLOWED_VOLUMES: &str = "['configMap', 'csi', 'downwardAPI', 'emptyDir', 'ephemeral', 'image', \
        'persistentVolumeClaim', 'projected', 'secret']";
    const VOLUME_TYPES: &str = "['hostPath', 'gcePersistentDisk', 'awsElasticBlockStore', 'gitRepo', 'nfs', \
        'iscsi', 'glusterfs', 'rbd', 'flexVolume', 'cinder', 'cephfs', 'flocker', 'fc', 'azureFile', \
        'vsphereVolume', 'quobyte', 'azureDisk', 'photonPersistentDisk', 'portworxVolume', 'scaleIO', 'storageos']";
    v.push(var(
        "restrictedVolumes",
        // A volume without a source is an emptyDir: upstream's defaulting (SetDefaults_Volume)
        // makes it one before admission sees it.
        format!("variables.volumes.filter(v, !v.all(k, k == 'name') && !{ALLOWED_VOLUMES}.exists(k, k in v))"),
    ));
    v.push(var(
        "restrictedVolumeNames",
        "variables.restrictedVolumes.map(v, v.name)",
    ));
    v.push(var(
        "restrictedVolumeTypes",
        format!(
            "variables.restrictedVolumes.map(v, ({VOLUME_TYPES}.filter(t, t in v) + ['unknown'])[0]).distinct().sort()"
        ),
    ));
    check(
        &mut v,
        "restrictedVolumes",
        result(
            "variables.restricted",
            "size(variables.restrictedVolumeNames) > 0",
            "'restricted volume types'",
            &format!(
                "{} + ' ' + {} + ' ' + {} + ' ' + {} + ' ' + {}",
                plural("volume", "volumes", "size(variables.restrictedVolumeNames)"),
                quoted("variables.restrictedVolumeNames"),
                plural("uses", "use", "size(variables.restrictedVolumeNames)"),
                plural(
                    "restricted volume type",
                    "restricted volume types",
                    "size(variables.restrictedVolumeTypes)"
                ),
                quoted("variables.restrictedVolumeTypes")
            ),
        ),
    );

    // runAsNonRoot (restricted, 1.0+, relaxed for user-namespaced pods from 1.35)
    v.push(var(
        "nonRootExplicit",
        bad_names("c.?securityContext.?runAsNonRoot.orValue(true) == false"),
    ));
    v.push(var(
        "nonRootImplicit",
        bad_names(&format!(
            "!c.?securityContext.?runAsNonRoot.hasValue() && !{PSC}.?runAsNonRoot.orValue(false)"
        )),
    ));
    v.push(var(
        "nonRootSetters",
        setters(
            &format!("{PSC}.?runAsNonRoot.orValue(true) == false"),
            "variables.nonRootExplicit",
        ),
    ));
    check(
        &mut v,
        "runAsNonRoot",
        format!(
            "!(variables.restricted && !(variables.minor >= 35 && variables.userNamespace)) ? [] : \
             size(variables.nonRootSetters) > 0 ? \
             ['runAsNonRoot != true (' + variables.nonRootSetters.join(' and ') + ' must not set securityContext.runAsNonRoot=false)'] : \
             size(variables.nonRootImplicit) > 0 ? \
             ['runAsNonRoot != true (pod or ' + {} + ' must set securityContext.runAsNonRoot=true)'] : []",
            containers_phrase("variables.nonRootImplicit")
        ),
    );

    // runAsUser (restricted, 1.23+, relaxed for user-namespaced pods from 1.35)
    v.push(var(
        "rootUserSetters",
        setters(
            &format!("{PSC}.?runAsUser.orValue(1) == 0"),
            &bad_names("c.?securityContext.?runAsUser.orValue(1) == 0"),
        ),
    ));
    check(
        &mut v,
        "runAsUser",
        result(
            "variables.restricted && variables.minor >= 23 && !(variables.minor >= 35 && variables.userNamespace)",
            "size(variables.rootUserSetters) > 0",
            "'runAsUser=0'",
            "variables.rootUserSetters.join(' and ') + ' must not set runAsUser=0'",
        ),
    );

    // seccompProfile_restricted (restricted, 1.19+; Windows pods exempt from 1.25)
    v.push(var(
        "seccompImplicit",
        bad_names(&format!(
            "!c.?securityContext.?seccompProfile.hasValue() && !({PSC}.?seccompProfile.hasValue() && {})",
            sc_ok(&format!("{PSC}.seccompProfile"))
        )),
    ));
    check(
        &mut v,
        "seccompProfile_restricted",
        format!(
            "!(variables.restricted && variables.minor >= 19 && !(variables.minor >= 25 && variables.windows)) ? [] : \
             size(variables.seccompSetters) > 0 ? ['seccompProfile (' + {sc_explicit} + ')'] : \
             size(variables.seccompImplicit) > 0 ? \
             ['seccompProfile (pod or ' + {} + ' must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")'] : []",
            containers_phrase("variables.seccompImplicit")
        ),
    );

    v.push(var("violations", results.join(" + ")));
    v
}

/// The variables reading the namespace's labels into `level`, `version` and `minor` for `mode`.
fn policy_variables(mode: Mode) -> Vec<Value> {
    let mut v = vec![var(
        "labels",
        "has(namespaceObject.metadata.labels) ? namespaceObject.metadata.labels : {}",
    )];
    let enforce_level = level_of("enforce", "restricted", Mode::Enforce.placeholder(false));
    let enforce_version = version_of("enforce-version", Mode::Enforce.placeholder(true));
    match mode {
        Mode::Enforce => {
            v.push(var("level", enforce_level));
            v.push(var("version", enforce_version));
        }
        Mode::Audit => {
            v.push(var(
                "level",
                level_of("audit", "privileged", mode.placeholder(false)),
            ));
            v.push(var(
                "version",
                version_of("audit-version", mode.placeholder(true)),
            ));
        }
        Mode::Warn => {
            // Warn follows an explicit, valid enforce level stronger than warn's default.
            let default = mode.placeholder(false);
            v.push(var("enforceLevel", enforce_level));
            v.push(var("enforceVersion", enforce_version));
            v.push(var(
                "warnFollowsEnforce",
                format!(
                    "!('{LABEL_PREFIX}warn' in variables.labels) && \
                     '{LABEL_PREFIX}enforce' in variables.labels && \
                     variables.labels['{LABEL_PREFIX}enforce'] in {LEVELS} && \
                     {RANK}[variables.enforceLevel] > {RANK}['{default}']"
                ),
            ));
            v.push(var(
                "level",
                format!(
                    "variables.warnFollowsEnforce ? variables.enforceLevel : ({})",
                    level_of("warn", "privileged", default)
                ),
            ));
            v.push(var(
                "version",
                format!(
                    "!('{LABEL_PREFIX}warn-version' in variables.labels) && variables.warnFollowsEnforce ? \
                     variables.enforceVersion : ({})",
                    version_of("warn-version", mode.placeholder(true))
                ),
            ));
        }
    }
    v.push(var(
        "minor",
        format!(
            "variables.version == 'latest' || size(variables.version) > 8 ? {MAX_VERSION_MINOR} : \
             int(variables.version.substring(3))"
        ),
    ));
    v.push(var("baseline", "variables.level != 'privileged'"));
    v.push(var("restricted", "variables.level == 'restricted'"));
    // The pod: a Pod's own, or a Deployment's or ReplicaSet's template.
    v.push(var("isPod", "request.resource.resource == 'pods'"));
    v.push(var(
        "meta",
        "variables.isPod ? object.metadata : object.spec.template.?metadata.orValue({})",
    ));
    v.push(var(
        "spec",
        "variables.isPod ? object.spec : object.spec.template.?spec.orValue({})",
    ));
    v.push(var(
        "annotations",
        "variables.meta.?annotations.orValue({})",
    ));
    v.push(var("psc", "variables.spec.?securityContext.orValue({})"));
    v.push(var("volumes", "variables.spec.?volumes.orValue([])"));
    v.push(var(
        "containers",
        "variables.spec.?initContainers.orValue([]) + variables.spec.?containers.orValue([]) + \
         variables.spec.?ephemeralContainers.orValue([])",
    ));
    v.push(var(
        "windows",
        "variables.spec.?os.?name.orValue('') == 'windows'",
    ));
    v.push(var(
        "userNamespace",
        "variables.spec.?hostUsers.orValue(true) == false",
    ));
    v
}

/// CEL match condition: a create, a workload's update, or a pod update upstream calls
/// significant (an image changed, a container added or removed, an ephemeral container added).
const SIGNIFICANT: &str = "request.operation != 'UPDATE' || request.resource.resource != 'pods' || \
    object.spec.containers.map(c, c.image) != oldObject.spec.containers.map(c, c.image) || \
    object.spec.?initContainers.orValue([]).map(c, c.image) != oldObject.spec.?initContainers.orValue([]).map(c, c.image) || \
    object.spec.?ephemeralContainers.orValue([]).exists(e, \
      !oldObject.spec.?ephemeralContainers.orValue([]).exists(o, o.name == e.name && o.image == e.image))";

/// The policy and binding of one mode.
pub fn mode_objects(mode: Mode) -> [Value; 2] {
    let name = mode.policy_name();
    let resources: &[&str] = match mode {
        Mode::Enforce => &["pods"],
        Mode::Warn | Mode::Audit => &["pods", "deployments", "replicasets"],
    };
    let mut variables = policy_variables(mode);
    variables.extend(check_variables());
    let prefix = match mode {
        Mode::Enforce => "violates",
        Mode::Warn | Mode::Audit => "would violate",
    };
    let message = format!(
        "'{prefix} PodSecurity \"' + variables.level + ':' + variables.version + '\": ' + variables.violations.join(', ')"
    );
    let passes = match mode {
        // Upstream adds no warning to a pod it refuses: skip when enforce checks the same.
        Mode::Warn => {
            "size(variables.violations) == 0 || \
            (variables.isPod && variables.level == variables.enforceLevel && variables.version == variables.enforceVersion)"
        }
        _ => "size(variables.violations) == 0",
    };
    let action = match mode {
        Mode::Enforce => "Deny",
        Mode::Warn => "Warn",
        Mode::Audit => "Audit",
    };
    let mut spec = json!({
        "matchConstraints": {
            "resourceRules": [{
                "apiGroups": [GROUP], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"], "resources": resources,
            }],
        },
        "matchConditions": [
            { "name": "not-exempt", "expression": not_exempt() },
            { "name": "significant-change", "expression": SIGNIFICANT },
        ],
        "failurePolicy": "Fail",
        "variables": variables,
        "validations": [{
            "expression": passes,
            "messageExpression": message,
            // What the apiserver shows when the message would exceed its 5 KiB limit.
            "message": format!("{prefix} PodSecurity: more violations than a 5 KiB message can list"),
            "reason": "Forbidden",
        }],
    });
    if mode == Mode::Audit {
        // Upstream's audit annotation `pod-security.kubernetes.io/audit-violations`; an
        // admission policy's keys are prefixed with its own name. An empty value is
        // omitted.
        spec["auditAnnotations"] = json!([{
            "key": AUDIT_VIOLATIONS_KEY,
            "valueExpression": format!("size(variables.violations) == 0 ? '' : {message}"),
        }]);
    }
    [
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": { "name": name },
            "spec": spec,
        }),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": { "name": name },
            "spec": { "policyName": name, "validationActions": [action] },
        }),
    ]
}

/// The three policies and their bindings, in apply order, with the defaults as placeholders.
pub fn objects() -> Vec<Value> {
    [Mode::Enforce, Mode::Warn, Mode::Audit]
        .into_iter()
        .flat_map(mode_objects)
        .collect()
}

/// `text` with each default's placeholder replaced by `value(default)`.
pub fn fill_defaults(text: &str, value: impl Fn(&DefaultSetting) -> String) -> String {
    DEFAULTS
        .iter()
        .fold(text.to_owned(), |t, d| t.replace(d.placeholder, &value(d)))
}

/// `text` with each exemption's placeholder replaced by `value(exemption)` (a CEL list).
pub fn fill_exemptions(text: &str, value: impl Fn(&Exemption) -> String) -> String {
    EXEMPTIONS
        .iter()
        .fold(text.to_owned(), |t, e| t.replace(e.placeholder, &value(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_check_of_upstream_is_evaluated_once_in_upstream_order() {
        let vars = check_variables();
        let violations = vars.last().unwrap()["expression"].as_str().unwrap();
        let ids: Vec<&str> = violations
            .split(" + ")
            .map(|v| v.trim_start_matches("variables.check_"))
            .collect();
        // Upstream's registry: baseline check IDs sorted, then restricted ones sorted.
        let baseline = [
            "appArmorProfile",
            "capabilities_baseline",
            "hostNamespaces",
            "hostPathVolumes",
            "hostPorts",
            "hostProbesAndHostLifecycle",
            "privileged",
            "procMount",
            "seLinuxOptions",
            "seccompProfile_baseline",
            "sysctls",
            "windowsHostProcess",
        ];
        let restricted = [
            "allowPrivilegeEscalation",
            "capabilities_restricted",
            "procMount_restricted",
            "restrictedVolumes",
            "runAsNonRoot",
            "runAsUser",
            "seccompProfile_restricted",
        ];
        let mut sorted_b = baseline.to_vec();
        sorted_b.sort();
        let mut sorted_r = restricted.to_vec();
        sorted_r.sort();
        assert_eq!(baseline.to_vec(), sorted_b);
        assert_eq!(restricted.to_vec(), sorted_r);
        assert_eq!(ids, [&baseline[..], &restricted[..]].concat());
    }

    #[test]
    fn defaults_are_filled_everywhere() {
        let text = serde_json::to_string(&objects()).unwrap();
        for d in &DEFAULTS {
            assert!(text.contains(d.placeholder), "{} unused", d.placeholder);
        }
        for e in &EXEMPTIONS {
            assert!(text.contains(e.placeholder), "{} unused", e.placeholder);
        }
        let filled = fill_defaults(&text, |d| d.rekube.to_owned());
        let filled = fill_exemptions(&filled, |_| "[]".to_owned());
        assert!(!filled.contains("REKUBE_PSS_"));
    }

    #[test]
    fn only_enforce_denies_and_only_pods() {
        let [policy, binding] = mode_objects(Mode::Enforce);
        assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
        assert_eq!(
            policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"],
            json!(["pods"])
        );
        for mode in [Mode::Warn, Mode::Audit] {
            let [_, binding] = mode_objects(mode);
            assert_ne!(binding["spec"]["validationActions"], json!(["Deny"]));
        }
    }
}
