//! rekube-csi: parses and validates its flags, opens the state dir, and serves the CSI
//! services on the endpoint until SIGTERM or SIGINT. `rekube-csi provisioner ...` runs
//! the provisioner role instead (external-provisioner in distributed mode), `rekube-csi
//! attacher ...` the attacher role (external-attacher, node-local), `rekube-csi resizer
//! ...` the resizer role (external-resizer, node-local), `rekube-csi registrar ...`
//! node-driver-registrar's role.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use rekube_csi::attacher::AttacherOptions;
use rekube_csi::driver::Driver;
use rekube_csi::kernel::LinuxKernel;
use rekube_csi::options::Options;
use rekube_csi::provisioner::ProvisionerOptions;
use rekube_csi::server;

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}

/// `rekube-csi provisioner ...`: the provisioner role.
async fn provisioner(args: Vec<String>) -> ExitCode {
    let options = ProvisionerOptions::parse_from(
        std::iter::once("rekube-csi provisioner".to_string()).chain(args),
    );
    let config = match options.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rekube-csi provisioner: {e}");
            return ExitCode::from(2);
        }
    };
    match rekube_csi::provisioner::controller::run(config, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rekube-csi provisioner: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `rekube-csi registrar ...`: node-driver-registrar's role.
async fn registrar(args: Vec<String>) -> ExitCode {
    let options = rekube_csi::registrar::RegistrarOptions::parse_from(
        std::iter::once("rekube-csi registrar".to_string()).chain(args),
    );
    match rekube_csi::registrar::run(options, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rekube-csi registrar: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `rekube-csi attacher ...`: the attacher role.
async fn attacher(args: Vec<String>) -> ExitCode {
    let options =
        AttacherOptions::parse_from(std::iter::once("rekube-csi attacher".to_string()).chain(args));
    let config = match options.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rekube-csi attacher: {e}");
            return ExitCode::from(2);
        }
    };
    match rekube_csi::attacher::controller::run(config, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rekube-csi attacher: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `rekube-csi resizer ...`: the resizer role.
async fn resizer(args: Vec<String>) -> ExitCode {
    let options = rekube_csi::resizer::ResizerOptions::parse_from(
        std::iter::once("rekube-csi resizer".to_string()).chain(args),
    );
    let config = match options.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rekube-csi resizer: {e}");
            return ExitCode::from(2);
        }
    };
    match rekube_csi::resizer::controller::run(config, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rekube-csi resizer: {e}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("provisioner") => return provisioner(args.collect()).await,
        Some("registrar") => return registrar(args.collect()).await,
        Some("attacher") => return attacher(args.collect()).await,
        Some("resizer") => return resizer(args.collect()).await,
        _ => {}
    }
    let options = Options::parse();
    let (socket, config) = match options.validate() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("rekube-csi: {e}");
            return ExitCode::from(2);
        }
    };
    let driver = match Driver::new(config, Arc::new(LinuxKernel)) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            eprintln!("rekube-csi: open the state dir: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match server::bind(&socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("rekube-csi: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(endpoint = %socket.display(), node = %driver.config().node_id, "serving");
    let shutdown = shutdown_signal();
    match server::serve(listener, &socket, driver, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rekube-csi: {e}");
            ExitCode::FAILURE
        }
    }
}
