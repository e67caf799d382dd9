//! The container image's definition agrees with the rest of the repository:
//! the Containerfile's OCI labels name the version Cargo.toml builds and the
//! repository the chart's default image is published from, and it runs a
//! numeric non-root user (so the chart's `runAsNonRoot: true` can be checked
//! by the kubelet). Building the image and checking it from inside is
//! `make image` (hack/image.sh), a step of `make test`.

use std::path::PathBuf;

fn read(relative: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// The instructions of the Containerfile's final stage, as (instruction,
/// arguments) pairs.
fn final_stage() -> Vec<(String, String)> {
    let text = read("Containerfile");
    let start = text
        .lines()
        .enumerate()
        .filter(|(_, line)| line.starts_with("FROM "))
        .map(|(i, _)| i)
        .last()
        .expect("the Containerfile has a FROM");
    text.lines()
        .skip(start)
        .filter_map(|line| line.split_once(' '))
        .map(|(instruction, args)| (instruction.to_string(), args.to_string()))
        .collect()
}

fn label(name: &str) -> String {
    final_stage()
        .into_iter()
        .filter(|(instruction, _)| instruction == "LABEL")
        .find_map(|(_, args)| {
            let (key, value) = args.split_once('=')?;
            (key == name).then(|| value.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| panic!("the Containerfile has no label {name}"))
}

fn yaml(relative: &str) -> serde_yaml::Value {
    serde_yaml::from_str(&read(relative)).unwrap()
}

#[test]
fn labels_name_the_cargo_version_and_the_chart_app_version() {
    let cargo: toml_version::Manifest = toml_version::parse(&read("Cargo.toml"));
    let chart = yaml("charts/ephemera/Chart.yaml");
    assert_eq!(label("org.opencontainers.image.version"), cargo.version);
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(cargo.version.as_str()),
        "the chart's appVersion (its default image tag) is not Cargo.toml's version"
    );
    assert_eq!(label("org.opencontainers.image.title"), "ephemera");
    assert_eq!(label("org.opencontainers.image.licenses"), cargo.license);
}

#[test]
fn the_chart_pulls_the_image_from_the_repository_the_labels_name() {
    // GHCR links a package to the repository named by this label.
    let source = label("org.opencontainers.image.source");
    let repository = yaml("charts/ephemera/values.yaml")["image"]["repository"]
        .as_str()
        .unwrap()
        .to_string();
    let path = source
        .strip_prefix("https://github.com/")
        .unwrap_or_else(|| panic!("source label {source} is not a GitHub repository"));
    assert_eq!(
        repository,
        format!("ghcr.io/{path}"),
        "the chart's default image is not the one the Containerfile's source label publishes"
    );
    let chart = yaml("charts/ephemera/Chart.yaml");
    let listed = chart["annotations"]["artifacthub.io/images"]
        .as_str()
        .unwrap_or_default();
    let app_version = chart["appVersion"].as_str().unwrap();
    assert!(
        listed.contains(&format!("image: {repository}:{app_version}")),
        "Chart.yaml's artifacthub.io/images does not list {repository}:{app_version}: {listed}"
    );
}

#[test]
fn runs_a_numeric_non_root_user_with_the_binary_as_entrypoint() {
    let stage = final_stage();
    let find = |name: &str| {
        stage
            .iter()
            .find(|(instruction, _)| instruction == name)
            .map(|(_, args)| args.clone())
            .unwrap_or_else(|| panic!("the final stage has no {name}"))
    };
    let user = find("USER");
    let (uid, gid) = user.split_once(':').unwrap_or((&user, &user));
    let uid: u32 = uid
        .parse()
        .unwrap_or_else(|_| panic!("USER {user} is not numeric"));
    let _: u32 = gid.parse().unwrap();
    assert_ne!(uid, 0, "the image runs as root");
    assert_eq!(find("ENTRYPOINT"), r#"["/usr/local/bin/ephemera"]"#);
    let values = yaml("charts/ephemera/values.yaml");
    assert_eq!(
        values["podSecurityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );
}

/// The two keys of Cargo.toml this test needs, without a TOML parser.
mod toml_version {
    pub struct Manifest {
        pub version: String,
        pub license: String,
    }

    pub fn parse(text: &str) -> Manifest {
        let value = |key: &str| {
            text.lines()
                .find_map(|line| {
                    let rest = line.strip_prefix(key)?.trim_start().strip_prefix('=')?;
                    Some(rest.trim().trim_matches('"').to_string())
                })
                .unwrap_or_else(|| panic!("Cargo.toml has no {key}"))
        };
        Manifest {
            version: value("version"),
            license: value("license"),
        }
    }
}
