//! `rekube-node-agent`: rekube's kubelet. `run` is the agent (the Node, its pods, the
//! service proxy); `proxy` runs the service proxy alone and `cleanup` removes its tables
//! (kube-proxy and its `--cleanup`); the `image` subcommands drive the image service by
//! hand (what `crictl pull/images/rmi` and `ctr images import` are for a containerd node).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand};
use rekube_node_agent::image::credentials::{
    DOCKER_CONFIG_JSON_KEY, RegistryCredential, parse_pull_secret,
};
use rekube_node_agent::image::gc::{GcPolicy, Statvfs, garbage_collect};
use rekube_node_agent::image::import::import_archive;
use rekube_node_agent::image::pull::pull_image;
use rekube_node_agent::image::{DEFAULT_ROOT, Reference, Store};

#[derive(Parser)]
#[command(name = "rekube-node-agent", version, about = "rekube's kubelet")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage the node's images.
    Image(ImageArgs),
    /// Run the agent: register the Node, heartbeat, run its pods.
    Run(Box<rekube_node_agent::agent::options::AgentOptions>),
    /// Run only the service proxy (kube-proxy alone), nftables mode.
    Proxy(Box<rekube_node_agent::proxy::command::ProxyCommand>),
    /// Delete what the agent put in the node's network: the service proxy's tables (ip
    /// and ip6 rekube-proxy, kube-proxy --cleanup), the routes to other nodes' pods, the
    /// masquerade table and the default network's bridge, if present.
    Cleanup(rekube_node_agent::proxy::command::CleanupCommand),
    /// The chart's pre-delete hook: delete the agents' DaemonSet and wait until its pods
    /// are gone (each agent first removes what it made on its node and releases its pods).
    Uninstall(rekube_node_agent::agent::uninstall::UninstallCommand),
}

#[derive(Args)]
struct ImageArgs {
    /// The image store's root directory.
    #[arg(long, global = true, default_value = DEFAULT_ROOT, env = "REKUBE_IMAGE_ROOT")]
    root: PathBuf,
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Pull an image from its registry (plain HTTP for localhost/127.0.0.1 registries).
    Pull {
        /// The image reference, e.g. busybox or localhost:5000/busybox:1.36.
        image: String,
        /// A docker config file (`{"auths": {...}}`, a Secret's .dockerconfigjson) with
        /// the registry credentials.
        #[arg(long)]
        pull_secret: Option<PathBuf>,
        /// Basic auth user for the image's registry (with --password).
        #[arg(long, requires = "password")]
        username: Option<String>,
        #[arg(long, requires = "username", env = "REKUBE_REGISTRY_PASSWORD")]
        password: Option<String>,
    },
    /// Load an OCI image layout or docker-archive tarball (`docker save`) into the store.
    Import {
        file: PathBuf,
        /// The name to give an image the archive does not name.
        #[arg(long)]
        name: Option<String>,
    },
    /// List the stored images.
    #[command(alias = "ls")]
    List {
        /// Print image IDs only.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove images by name or ID; content no image needs is deleted.
    #[command(alias = "rmi")]
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Garbage-collect unused images when disk usage is over the high threshold.
    Gc {
        /// Start collecting at this disk usage (percent).
        #[arg(long, default_value_t = 85)]
        high_threshold: u8,
        /// Collect down to this disk usage (percent).
        #[arg(long, default_value_t = 80)]
        low_threshold: u8,
        /// Never collect images stored more recently than this.
        #[arg(long, default_value = "2m", value_parser = humantime_secs)]
        minimum_image_ttl: Duration,
        /// Images in use (name or ID), kept whatever the usage.
        #[arg(long = "in-use")]
        in_use: Vec<String>,
    },
}

fn humantime_secs(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    Ok(Duration::from_secs(match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("invalid duration {s:?}: use s, m or h")),
    }))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Image(args) => run_image(args),
        Command::Run(opts) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| -> BoxError { Box::new(e) })
            .and_then(|rt| {
                rt.block_on(rekube_node_agent::agent::run::run(*opts))
                    .map_err(|e| -> BoxError { Box::new(e) })
            }),
        Command::Proxy(cmd) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| -> BoxError { Box::new(e) })
            .and_then(|rt| {
                rt.block_on(rekube_node_agent::proxy::command::run_proxy(*cmd))
                    .map_err(|e| -> BoxError { Box::new(e) })
            }),
        Command::Cleanup(cmd) => rekube_node_agent::proxy::command::run_cleanup(cmd)
            .map_err(|e| -> BoxError { Box::new(e) }),
        Command::Uninstall(cmd) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| -> BoxError { Box::new(e) })
            .and_then(|rt| {
                rt.block_on(rekube_node_agent::agent::uninstall::run_uninstall(cmd))
                    .map_err(|e| -> BoxError { Box::new(e) })
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn run_image(args: ImageArgs) -> Result<(), BoxError> {
    let store = Store::open(&args.root)?;
    match args.command {
        ImageCommand::Pull {
            image,
            pull_secret,
            username,
            password,
        } => {
            let reference = Reference::parse(&image)?;
            let mut creds: Vec<RegistryCredential> = Vec::new();
            if let Some(path) = pull_secret {
                let data = std::fs::read(&path)
                    .map_err(|e| format!("reading pull secret {}: {e}", path.display()))?;
                creds.extend(parse_pull_secret(&BTreeMap::from([(
                    DOCKER_CONFIG_JSON_KEY.to_string(),
                    data,
                )]))?);
            }
            if let (Some(username), Some(password)) = (username, password) {
                creds.insert(
                    0,
                    RegistryCredential {
                        registry: reference.domain().to_string(),
                        username,
                        password,
                    },
                );
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let img = runtime.block_on(pull_image(&store, &reference, &creds))?;
            println!("{}", img.image_ref());
        }
        ImageCommand::Import { file, name } => {
            let name = name.as_deref().map(Reference::parse).transpose()?;
            for img in import_archive(&store, &file, name.as_ref(), SystemTime::now())? {
                for n in &img.names {
                    println!("{n} {}", img.id);
                }
            }
        }
        ImageCommand::List { quiet } => {
            let images = store.list()?;
            if quiet {
                for img in images {
                    println!("{}", img.id);
                }
                return Ok(());
            }
            println!(
                "{:<50} {:<20} {:<14} {:>10}",
                "IMAGE", "TAG", "IMAGE ID", "SIZE"
            );
            for img in images {
                for name in &img.names {
                    let r = Reference::parse(name)?;
                    println!(
                        "{:<50} {:<20} {:<14} {:>10}",
                        r.name(),
                        r.tag().unwrap_or("<none>"),
                        img.id.short(),
                        human_size(img.size)
                    );
                }
            }
        }
        ImageCommand::Rm { images } => {
            for image in images {
                for name in store.remove(&image)? {
                    println!("Deleted: {name}");
                }
            }
        }
        ImageCommand::Gc {
            high_threshold,
            low_threshold,
            minimum_image_ttl,
            in_use,
        } => {
            let mut keep = HashSet::new();
            for i in in_use {
                let img = store
                    .find(&i)?
                    .ok_or_else(|| format!("image {i:?} not found"))?;
                keep.insert(img.id);
            }
            let policy = GcPolicy {
                high_threshold_percent: high_threshold,
                low_threshold_percent: low_threshold,
                min_age: minimum_image_ttl,
            };
            let stats = Statvfs(store.root().to_path_buf());
            let report = garbage_collect(&store, &stats, &policy, &keep, SystemTime::now())?;
            for id in &report.removed {
                println!("Deleted: {id}");
            }
            println!("freed {} bytes", report.freed);
        }
    }
    Ok(())
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.3}{}", UNITS[unit])
    }
}
