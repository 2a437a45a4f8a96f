//! The Helm chart's `crds/` is the top-level `crds/`, byte for byte: every file of the
//! chart's `crds/` (Helm installs each one) is a CRD file of `crds/`, and every CRD file
//! of `crds/` is in the chart. `crds/admission-policies.rekube.io.yaml` is the one file
//! of `crds/` the chart has elsewhere (templates/, with values). `just crds` writes both
//! folders (crdgen); `committed_manifests_match_crdgen` checks each against the types.
use std::collections::BTreeMap;
use std::path::Path;

use rekube_crds::generate::{ADMISSION_FILE, HELM_CHART};

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry"))
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(entry.path()).expect("a readable file");
            (name, bytes)
        })
        .collect()
}

#[test]
fn the_chart_s_crds_are_the_top_level_crds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut top = files(&root.join("crds"));
    // crds/ is also the rekube-crds crate's folder: only its YAML files are manifests.
    top.retain(|name, _| name.ends_with(".yaml") && name != ADMISSION_FILE);
    let chart = files(&root.join(HELM_CHART).join("crds"));
    let mut problems = Vec::new();
    for (name, bytes) in &chart {
        match top.get(name) {
            None => problems.push(format!(
                "{HELM_CHART}/crds/{name} is not in crds/ (Helm would install it)"
            )),
            Some(b) if b != bytes => {
                problems.push(format!("{HELM_CHART}/crds/{name} differs from crds/{name}"))
            }
            Some(_) => {}
        }
    }
    for name in top.keys().filter(|n| !chart.contains_key(*n)) {
        problems.push(format!("crds/{name} is missing from {HELM_CHART}/crds/"));
    }
    assert!(
        problems.is_empty(),
        "run `just crds`:\n{}",
        problems.join("\n")
    );
    assert!(!chart.is_empty(), "{HELM_CHART}/crds/ holds no CRD");
}
