//! What the apiserver authorizes a request as: its verb (get, list, watch, create, update,
//! patch, delete, deletecollection) and resource (group, resource, subresource), derived
//! from the HTTP method and URL alone as upstream's RequestInfoFactory does
//! (k8s.io/apiserver/pkg/endpoints/request/requestinfo.go). The request metrics carry
//! both, so they say which RBAC grant each request of the controllers used.
//!
//! Not ported: the object name taken from a `metadata.name` field selector (the name is
//! not part of what the metrics record).

/// upstream's RequestInfo, without the path parts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// Whether the path names an API resource (`/api/v1/...`, `/apis/<group>/<version>/...`).
    pub is_resource_request: bool,
    /// The URL path.
    pub path: String,
    /// The authorization verb; the lowercase HTTP method for a non-resource request.
    pub verb: String,
    /// `api` or `apis`.
    pub api_prefix: String,
    /// Empty for the core group.
    pub api_group: String,
    pub api_version: String,
    /// Empty for a cluster-scoped resource or a request across all namespaces.
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
}

/// Verbs written as the first path segment after the version (deprecated URL forms).
const SPECIAL_VERBS: [&str; 2] = ["proxy", "watch"];
/// Of those, the ones whose third part is not a subresource.
const SPECIAL_VERBS_NO_SUBRESOURCES: [&str; 1] = ["proxy"];
/// Subresources of a namespace, told apart from a resource in the namespace.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

impl RequestInfo {
    /// The request info of `method` on `path` with `query` (without the `?`): upstream's
    /// NewRequestInfo with API prefixes `api` and `apis`, `api` groupless. A path it cannot
    /// make sense of is a non-resource request.
    pub fn new(method: &str, path: &str, query: Option<&str>) -> RequestInfo {
        let non_resource = RequestInfo {
            path: path.to_string(),
            verb: method.to_lowercase(),
            ..RequestInfo::default()
        };
        let trimmed = path.trim_matches('/');
        let mut parts: Vec<&str> = if trimmed.is_empty() {
            Vec::new()
        } else {
            trimmed.split('/').collect()
        };
        if parts.len() < 3 || !matches!(parts[0], "api" | "apis") {
            return non_resource;
        }
        let mut info = RequestInfo {
            is_resource_request: true,
            api_prefix: parts[0].to_string(),
            ..non_resource.clone()
        };
        parts.remove(0);
        if info.api_prefix != "api" {
            // The prefix is consumed: "do we have four parts?"
            if parts.len() < 3 {
                return non_resource;
            }
            info.api_group = parts.remove(0).to_string();
        }
        info.api_version = parts.remove(0).to_string();

        if SPECIAL_VERBS.contains(&parts[0]) {
            if parts.len() < 2 {
                // upstream: "unable to determine kind and namespace from url".
                return non_resource;
            }
            info.verb = parts.remove(0).to_string();
        } else {
            info.verb = match method {
                "POST" => "create",
                "GET" | "HEAD" => "get",
                "PUT" => "update",
                "PATCH" => "patch",
                "DELETE" => "delete",
                _ => "",
            }
            .to_string();
        }

        // /namespaces/{namespace}/{resource}/...: the parts start at the resource, unless
        // the step after the namespace is one of the namespace's own subresources. A patch
        // of /namespaces/{name} (server-side apply creating it) is in no namespace.
        let applying_a_namespace = parts.len() == 2 && info.verb == "patch";
        if parts[0] == "namespaces" && parts.len() > 1 && !applying_a_namespace {
            info.namespace = parts[1].to_string();
            if parts.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&parts[2]) {
                parts.drain(..2);
            }
        }

        // resource/name/subresource/anything/else
        if parts.len() >= 3 && !SPECIAL_VERBS_NO_SUBRESOURCES.contains(&info.verb.as_str()) {
            info.subresource = parts[2].to_string();
        }
        if parts.len() >= 2 {
            info.name = parts[1].to_string();
        }
        info.resource = parts[0].to_string();

        // No name: a get is a list or a watch (any watch value but false and 0 is true),
        // a delete is a deletecollection.
        if info.name.is_empty() && info.verb == "get" {
            let watch =
                query
                    .unwrap_or_default()
                    .split('&')
                    .find_map(|p| match p.split_once('=') {
                        Some(("watch", v)) => Some(v),
                        None if p == "watch" => Some(""),
                        _ => None,
                    });
            info.verb = match watch {
                Some(v) if !matches!(v.to_lowercase().as_str(), "false" | "0") => "watch",
                _ => "list",
            }
            .to_string();
        }
        if info.name.is_empty() && info.verb == "delete" {
            info.verb = "deletecollection".to_string();
        }
        info
    }

    /// The resource as RBAC rules and `kubectl auth can-i` name it:
    /// `resource[.group][/subresource]` (`pods.rekube.io/status`,
    /// `leases.coordination.k8s.io`, `events.events.k8s.io`, `namespaces`); the path of a
    /// non-resource request (an RBAC rule's nonResourceURLs).
    pub fn resource_label(&self) -> String {
        if !self.is_resource_request {
            return self.path.clone();
        }
        let mut label = self.resource.clone();
        if !self.api_group.is_empty() {
            label.push('.');
            label.push_str(&self.api_group);
        }
        if !self.subresource.is_empty() {
            label.push('/');
            label.push_str(&self.subresource);
        }
        label
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(method: &str, url: &str) -> RequestInfo {
        let (path, query) = match url.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (url, None),
        };
        RequestInfo::new(method, path, query)
    }

    /// upstream TestGetAPIRequestInfo's success cases: (method, url, verb, prefix, group,
    /// version, namespace, resource, subresource, name).
    #[test]
    fn resource_requests() {
        #[rustfmt::skip]
        let cases = [
            // resource paths
            ("GET", "/api/v1/namespaces", "list", "api", "", "v1", "", "namespaces", "", ""),
            ("GET", "/api/v1/namespaces/other", "get", "api", "", "v1", "other", "namespaces", "", "other"),
            ("GET", "/api/v1/namespaces/other/pods", "list", "api", "", "v1", "other", "pods", "", ""),
            ("GET", "/api/v1/namespaces/other/pods/foo", "get", "api", "", "v1", "other", "pods", "", "foo"),
            ("HEAD", "/api/v1/namespaces/other/pods/foo", "get", "api", "", "v1", "other", "pods", "", "foo"),
            ("GET", "/api/v1/pods", "list", "api", "", "v1", "", "pods", "", ""),
            ("HEAD", "/api/v1/pods", "list", "api", "", "v1", "", "pods", "", ""),
            ("PATCH", "/api/v1/namespaces/new-namespace", "patch", "api", "", "v1", "", "namespaces", "", "new-namespace"),
            // special verbs
            ("GET", "/api/v1/proxy/namespaces/other/pods/foo", "proxy", "api", "", "v1", "other", "pods", "", "foo"),
            ("GET", "/api/v1/proxy/namespaces/other/pods/foo/subpath/not/a/subresource", "proxy", "api", "", "v1", "other", "pods", "", "foo"),
            ("GET", "/api/v1/watch/pods", "watch", "api", "", "v1", "", "pods", "", ""),
            ("GET", "/api/v1/pods?watch=true", "watch", "api", "", "v1", "", "pods", "", ""),
            ("GET", "/api/v1/pods?watch=false", "list", "api", "", "v1", "", "pods", "", ""),
            ("GET", "/api/v1/watch/namespaces/other/pods", "watch", "api", "", "v1", "other", "pods", "", ""),
            ("GET", "/api/v1/namespaces/other/pods?watch=1", "watch", "api", "", "v1", "other", "pods", "", ""),
            ("GET", "/api/v1/namespaces/other/pods?watch=0", "list", "api", "", "v1", "other", "pods", "", ""),
            // subresource identification
            ("GET", "/api/v1/namespaces/other/pods/foo/status", "get", "api", "", "v1", "other", "pods", "status", "foo"),
            ("GET", "/api/v1/namespaces/other/pods/foo/proxy/subpath", "get", "api", "", "v1", "other", "pods", "proxy", "foo"),
            ("PUT", "/api/v1/namespaces/other/finalize", "update", "api", "", "v1", "other", "namespaces", "finalize", "other"),
            ("PUT", "/api/v1/namespaces/other/status", "update", "api", "", "v1", "other", "namespaces", "status", "other"),
            // verb identification
            ("PATCH", "/api/v1/namespaces/other/pods/foo", "patch", "api", "", "v1", "other", "pods", "", "foo"),
            ("DELETE", "/api/v1/namespaces/other/pods/foo", "delete", "api", "", "v1", "other", "pods", "", "foo"),
            ("POST", "/api/v1/namespaces/other/pods", "create", "api", "", "v1", "other", "pods", "", ""),
            // deletecollection verb identification
            ("DELETE", "/api/v1/nodes", "deletecollection", "api", "", "v1", "", "nodes", "", ""),
            ("DELETE", "/api/v1/namespaces", "deletecollection", "api", "", "v1", "", "namespaces", "", ""),
            ("DELETE", "/api/v1/namespaces/other/pods", "deletecollection", "api", "", "v1", "other", "pods", "", ""),
            ("DELETE", "/apis/extensions/v1/namespaces/other/pods", "deletecollection", "apis", "extensions", "v1", "other", "pods", "", ""),
            // api group identification
            ("POST", "/apis/extensions/v1/namespaces/other/pods", "create", "apis", "extensions", "v1", "other", "pods", "", ""),
            // api version identification
            ("POST", "/apis/extensions/v1beta3/namespaces/other/pods", "create", "apis", "extensions", "v1beta3", "other", "pods", "", ""),
        ];
        for (method, url, verb, prefix, group, version, namespace, resource, sub, name) in cases {
            let got = info(method, url);
            assert!(got.is_resource_request, "{method} {url}");
            assert_eq!(
                (
                    got.verb.as_str(),
                    got.api_prefix.as_str(),
                    got.api_group.as_str(),
                    got.api_version.as_str(),
                    got.namespace.as_str(),
                    got.resource.as_str(),
                    got.subresource.as_str(),
                    got.name.as_str()
                ),
                (verb, prefix, group, version, namespace, resource, sub, name),
                "{method} {url}"
            );
        }
    }

    /// upstream TestGetAPIRequestInfo's error cases and TestGetNonAPIRequestInfo.
    #[test]
    fn non_resource_requests() {
        for (url, resource) in [
            ("/", false),
            ("/api/version/", false),
            ("/apis/group/version/", false),
            ("/badprefix/version/resource", false),
            ("/apis/version/resource", false),
            ("/api/version/resource", true),
            ("/apis/group/version/resource/name/subresource", true),
            ("/api/version/resource/name/subresource", true),
            ("/apis/batch/v1/job", true),
            ("/apis/batch/v1/job/foo", true),
            ("/apis/batch/v1/job/foo/scale", true),
            ("/not-api/version/resource", false),
            ("/apis/extensions/v1beta1", false),
            ("/apis/extensions/v1beta1/", false),
            ("/api/version", false),
            ("/api", false),
            ("", false),
        ] {
            assert_eq!(info("GET", url).is_resource_request, resource, "{url}");
        }
        let healthz = info("GET", "/healthz");
        assert_eq!(
            (healthz.verb.as_str(), healthz.resource_label().as_str()),
            ("get", "/healthz")
        );
    }

    /// upstream TestFieldSelectorParsing: the verbs (the name from a `metadata.name`
    /// selector is not ported).
    #[test]
    fn list_or_watch_with_field_selectors() {
        for (url, verb) in [
            ("/apis/group/version/resource", "list"),
            (
                "/apis/group/version/resource?fieldSelector=metadata.name=name1",
                "list",
            ),
            (
                "/apis/group/version/resource?watch=true&fieldSelector=metadata.name=name1",
                "watch",
            ),
            ("/apis/group/version/resource?fieldSelector=foo=bar", "list"),
            (
                "/apis/group/version/resource?fieldSelector=metadata.name=name1,foo&watch=true",
                "watch",
            ),
            (
                "/apis/group/version/resource?fieldSelector=metadata.name=name1,foo&watch=false",
                "list",
            ),
        ] {
            assert_eq!(info("GET", url).verb, verb, "{url}");
        }
    }

    /// The requests the controllers issue, as kube-rs writes them, and their labels.
    #[test]
    fn labels_of_the_controllers_requests() {
        #[rustfmt::skip]
        let cases = [
            ("GET", "/apis/rekube.io/v1/namespaces/ns/pods?limit=500", "list", "pods.rekube.io"),
            ("GET", "/apis/rekube.io/v1/namespaces/ns/pods?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion=12", "watch", "pods.rekube.io"),
            ("GET", "/apis/rekube.io/v1/pods?watch=True", "watch", "pods.rekube.io"),
            ("PATCH", "/apis/rekube.io/v1/namespaces/ns/pods/web-1/status?", "patch", "pods.rekube.io/status"),
            ("PUT", "/apis/rekube.io/v1/nodes/n/status?", "update", "nodes.rekube.io/status"),
            ("GET", "/apis/rekube.io/v1/nodes/gone", "get", "nodes.rekube.io"),
            ("DELETE", "/apis/rekube.io/v1/namespaces/ns/replicasets/web-1", "delete", "replicasets.rekube.io"),
            ("PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/rekube-controllers?", "update", "leases.coordination.k8s.io"),
            ("POST", "/apis/events.k8s.io/v1/namespaces/default/events?", "create", "events.events.k8s.io"),
            ("GET", "/api/v1/namespaces/ns/secrets/s", "get", "secrets"),
            ("GET", "/api/v1/namespaces/ns", "get", "namespaces"),
            ("GET", "/version", "get", "/version"),
        ];
        for (method, url, verb, resource) in cases {
            let got = info(method, url);
            assert_eq!(
                (got.verb.as_str(), got.resource_label().as_str()),
                (verb, resource),
                "{method} {url}"
            );
        }
    }
}
