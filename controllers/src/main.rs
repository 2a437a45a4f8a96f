//! rekube-controllers: kube-controller-manager's Deployment and ReplicaSet controllers for
//! rekube.io objects. Flags: `rekube-controllers --help`; docs/controllers.md.
use clap::Parser;
use rekube_controllers::manager::{options::Options, run::run};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let opts = Options::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    if opts.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
    match run(opts).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "rekube-controllers stopped");
            // Exit now, as upstream's klog.FlushAndExit: no task of a deposed leader or of a
            // manager with a dead informer gets another turn while the runtime winds down.
            std::process::exit(1)
        }
    }
}
