//! What a user who clones the repository finds: the licenses `Cargo.toml` names, a
//! changelog, secrets kept out of git, and a README whose links lead to files the clone has.
#![allow(clippy::unwrap_used)]

use std::path::Path;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn read(p: &str) -> String {
    std::fs::read_to_string(root().join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

#[test]
fn the_licenses_named_in_cargo_toml_are_there() {
    let cargo = read("Cargo.toml");
    assert!(
        cargo.contains(r#"license = "MIT OR Apache-2.0""#),
        "Cargo.toml's license changed: update this test and the files"
    );
    assert!(read("LICENSE-MIT").contains("Permission is hereby granted, free of charge"));
    assert!(read("LICENSE-APACHE").contains("Apache License") && read("LICENSE-APACHE").contains("Version 2.0"));
    assert!(read("CHANGELOG.md").starts_with("# Changelog"));
}

#[test]
fn configurations_with_secrets_are_ignored_by_git() {
    let ignore = read(".gitignore");
    for f in ["/config.json", "/config.toml", "/config.yaml", "/config.yml"] {
        assert!(ignore.lines().any(|l| l.trim() == f), ".gitignore lacks {f}");
    }
}

#[test]
fn every_relative_link_of_the_readme_exists() {
    let readme = read("README.md");
    let mut checked = 0;
    for (i, _) in readme.match_indices("](") {
        let rest = &readme[i + 2..];
        let Some(end) = rest.find(')') else { continue };
        let target = rest[..end].split('#').next().unwrap();
        if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        assert!(
            root().join(target).exists(),
            "README links to {target}, which a clone does not have"
        );
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} relative links found: is the parser still right?");
    for f in [
        "examples/browser/index.html",
        "examples/browser/token.mjs",
        "examples/browser/mint_token.py",
        "deploy/nginx.conf",
    ] {
        assert!(readme.contains(f.rsplit('/').next().unwrap()) && root().join(f).exists(), "{f}");
    }
}
