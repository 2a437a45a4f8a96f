//! kube-proxy's health checks (pkg/proxy/healthcheck): the proxy's own `/healthz` and
//! `/livez` on `--healthz-bind-address` ([`proxy_health`]), and one HTTP server per
//! health check node port of a LoadBalancer Service with externalTrafficPolicy Local,
//! answering whether this node has a ready endpoint of it ([`service_health`]). Both
//! states are pure; [`serve`] is the HTTP shell.

pub mod proxy_health;
pub mod serve;
pub mod service_health;

/// One HTTP answer of a health server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Reply {
    /// A reply with upstream's headers: the content type and `X-Content-Type-Options:
    /// nosniff`.
    pub fn new(status: u16, content_type: &str, body: String) -> Self {
        Reply {
            status,
            headers: vec![
                ("Content-Type", content_type.to_string()),
                ("X-Content-Type-Options", "nosniff".to_string()),
            ],
            body,
        }
    }

    /// `value` as JSON.
    pub fn json(status: u16, value: &impl serde::Serialize) -> Self {
        let body = serde_json::to_string(value).expect("health bodies serialize");
        Reply::new(status, "application/json", body)
    }

    /// Go's `http.NotFound`.
    pub fn not_found() -> Self {
        Reply::new(
            404,
            "text/plain; charset=utf-8",
            "404 page not found\n".to_string(),
        )
    }
}
