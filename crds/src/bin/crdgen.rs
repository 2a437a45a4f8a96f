//! crdgen: writes rekube's generated manifests (CRDs and admission policies) into
//! `crds/` and the Helm chart.
//!
//! - `crdgen [ROOT]` writes them under ROOT (default: the current folder).
//! - `crdgen --check [ROOT]` exits 1 and names each file that differs from what it would write.
//! - `crdgen --sizes` prints each CRD's size and how deep its descriptions go.
use std::path::PathBuf;
use std::process::ExitCode;

use rekube_crds::generate::{LAST_APPLIED_BUDGET, drift, render_all, write};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (flags, roots): (Vec<&String>, Vec<&String>) =
        args.iter().partition(|a| a.starts_with('-'));
    let root = PathBuf::from(roots.first().map(|s| s.as_str()).unwrap_or("."));
    match flags.first().map(|f| f.as_str()) {
        None => match write(&root) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("crdgen: writing under {}: {e}", root.display());
                ExitCode::FAILURE
            }
        },
        Some("--check") => {
            let problems = drift(&root);
            for p in &problems {
                eprintln!("crdgen: {p}");
            }
            if problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                eprintln!("crdgen: generated files are out of date: run `just crds`");
                ExitCode::FAILURE
            }
        }
        Some("--sizes") => {
            println!(
                "{:<42} {:>9} {:>9} {:>6}",
                "file", "YAML B", "JSON B", "depth"
            );
            for r in render_all().values() {
                println!(
                    "{:<42} {:>9} {:>9} {:>6}",
                    r.file_name,
                    r.yaml.len(),
                    r.json_bytes,
                    r.description_depth
                );
            }
            println!(
                "(JSON is what kubectl's last-applied annotation holds; budget {LAST_APPLIED_BUDGET} B of 262144)"
            );
            ExitCode::SUCCESS
        }
        Some(_) => {
            eprintln!("usage: crdgen [--check | --sizes] [ROOT]");
            ExitCode::from(2)
        }
    }
}
