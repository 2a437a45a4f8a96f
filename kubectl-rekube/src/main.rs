//! `kubectl rekube`: kubectl's node maintenance commands for rekube.io Nodes (kubectl's
//! own cordon/uncordon/drain only know core Nodes). Installed as `kubectl-rekube` on the
//! PATH, kubectl finds it as a plugin.
//!
//! - `kubectl rekube cordon NODE` / `uncordon NODE`: set or clear `spec.unschedulable`.
//! - `kubectl rekube drain NODE`: cordon, then evict the node's pods as kubectl drain does
//!   ([`filters`] decides which), waiting for each to be gone.
//! - `kubectl rekube tree KIND/NAME`: the objects a Deployment, ReplicaSet, Pod or Service
//!   owns, down the ownerReferences, each with its status (the kubectl-tree plugin's view).
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod drain;
mod filters;
mod tree;
mod tree_view;

#[derive(Parser)]
#[command(
    name = "kubectl-rekube",
    version,
    about = "Node maintenance for rekube.io Nodes, and the ownership tree of rekube objects"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mark the node unschedulable.
    Cordon { node: String },
    /// Mark the node schedulable again.
    Uncordon { node: String },
    /// Cordon the node, then evict its pods.
    Drain {
        node: String,
        /// Also delete pods that declare no controller (they are not recreated).
        #[arg(long)]
        force: bool,
        /// Leave DaemonSet-managed pods in place instead of refusing to drain.
        #[arg(long)]
        ignore_daemonsets: bool,
        /// Also delete pods with emptyDir volumes (their data is lost).
        #[arg(long)]
        delete_emptydir_data: bool,
        /// Seconds each pod gets to terminate; negative: the pod's own
        /// terminationGracePeriodSeconds.
        #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
        grace_period: i64,
        /// How long to wait for the pods to be gone; 0 waits forever.
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Print the objects KIND/NAME owns (ReplicaSets, Pods, claims, EndpointSlices,
    /// Endpoints), down the ownerReferences, each with its status.
    Tree {
        /// deployment/NAME, replicaset/NAME, pod/NAME, service/NAME or pvc/NAME (kubectl's
        /// short names and rekube's, such as rdeploy or rsvc, work too).
        target: String,
        /// The namespace; the kubeconfig's when not set.
        #[arg(short, long)]
        namespace: Option<String>,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: connecting to the cluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Cordon { node } => drain::cordon(&client, &node, true).await,
        Command::Uncordon { node } => drain::cordon(&client, &node, false).await,
        Command::Drain {
            node,
            force,
            ignore_daemonsets,
            delete_emptydir_data,
            grace_period,
            timeout,
        } => {
            let flags = filters::DrainFlags {
                force,
                ignore_daemonsets,
                delete_emptydir_data,
            };
            drain::drain(&client, &node, &flags, grace_period, timeout).await
        }
        Command::Tree { target, namespace } => {
            let ns = namespace.unwrap_or_else(|| client.default_namespace().to_string());
            match tree::tree(&client, &ns, &target).await {
                Ok(out) => {
                    print!("{out}");
                    Ok(())
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
