//! Example names are unique across the workspace, so the README's
//! `cargo run --release --example serve_metrics` has one target to run
//! (cargo refuses "at most one executable" when two members share a name,
//! as this crate's synthetic example once did with the facade's).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Example name → packages that define an example of that name.
fn examples() -> BTreeMap<String, Vec<String>> {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pkg in meta["packages"].as_array().unwrap() {
        let pkg_name = pkg["name"].as_str().unwrap();
        for target in pkg["targets"].as_array().unwrap() {
            let is_example = target["kind"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k == "example");
            if is_example {
                by_name
                    .entry(target["name"].as_str().unwrap().to_string())
                    .or_default()
                    .push(pkg_name.to_string());
            }
        }
    }
    by_name
}

#[test]
fn example_names_are_unique_and_the_readme_ones_exist() {
    let examples = examples();
    for (name, pkgs) in &examples {
        assert_eq!(
            pkgs.len(),
            1,
            "example {name:?} is defined by {pkgs:?}: `cargo run --example {name}` cannot choose"
        );
    }
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let named: Vec<&str> = readme
        .split("--example ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    assert!(
        named.contains(&"serve_metrics"),
        "README no longer runs serve_metrics: {named:?}"
    );
    for name in named {
        assert!(
            examples.contains_key(name),
            "README runs example {name:?}, which no member defines"
        );
    }
    assert_eq!(
        examples["telemetry_metrics"],
        ["ragjet-telemetry"],
        "this crate's model-free example"
    );
}
