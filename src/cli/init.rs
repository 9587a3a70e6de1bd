//! `smithers init [DIR]`: scaffolds a workflow crate that builds and runs offline: a
//! `Cargo.toml` on the published names, one component in the 3-file pattern (component,
//! schema, Markdown prompt), a Ralph loop, and a test that runs it against a scripted agent.

use std::path::{Path, PathBuf};

/// What to scaffold.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// The directory to create (or fill, when it exists and is empty).
    pub dir: PathBuf,
    /// The package name; by default the directory's name.
    pub name: Option<String>,
    /// A path to a smithers-rs checkout, written as `path = ".."` beside the version (for
    /// working against an unreleased smithers).
    pub smithers_path: Option<PathBuf>,
}

/// Why `init` refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// The directory exists and is not empty.
    #[error("`{0}` already exists and is not empty; pick a new directory (nothing was written)")]
    NotEmpty(PathBuf),
    /// No usable package name.
    #[error("`{0}` is not a valid package name: use ASCII letters, digits, `-` and `_`, starting with a letter; pass --name")]
    BadName(String),
    /// A file could not be written.
    #[error("cannot write `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The files `init` writes, relative to the directory, with their text.
pub fn scaffold(name: &str, smithers_path: Option<&Path>) -> Vec<(&'static str, String)> {
    let krate = name.replace('-', "_");
    let fill = |t: &str| t.replace("{{name}}", name).replace("{{crate}}", &krate);
    let smithers = match smithers_path {
        Some(p) => format!(
            "smithers-rs = {{ version = \"{}\", path = {:?} }}",
            env!("CARGO_PKG_VERSION"),
            p.display().to_string()
        ),
        None => format!("smithers-rs = \"{}\"", env!("CARGO_PKG_VERSION")),
    };
    let cargo_toml = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"

[dependencies]
# The library is `smithers` (`use smithers::prelude::*`); the package is published as smithers-rs.
{smithers}
serde = {{ version = "1", features = ["derive"] }}
schemars = "1"
tokio = {{ version = "1", features = ["macros", "rt-multi-thread"] }}
"#
    );
    vec![
        ("Cargo.toml", cargo_toml),
        (".gitignore", "/target\n/.smithers\n".to_owned()),
        ("src/lib.rs", fill(include_str!("init/lib.rs.txt"))),
        ("src/main.rs", fill(include_str!("init/main.rs.txt"))),
        (
            "src/review/mod.rs",
            fill(include_str!("init/review/mod.rs.txt")),
        ),
        (
            "src/review/schema.rs",
            fill(include_str!("init/review/schema.rs.txt")),
        ),
        (
            "src/review/prompt.md",
            fill(include_str!("init/review/prompt.md")),
        ),
        ("tests/workflow.rs", fill(include_str!("init/test.rs.txt"))),
    ]
}

/// Writes the scaffold; returns the files written. Refuses a non-empty directory.
pub fn init(opts: &InitOptions) -> Result<Vec<PathBuf>, InitError> {
    let name = match &opts.name {
        Some(n) => n.clone(),
        None => opts
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    if opts.dir.exists()
        && std::fs::read_dir(&opts.dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(InitError::NotEmpty(opts.dir.clone()));
    }
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(InitError::BadName(name));
    }
    let mut written = Vec::new();
    for (rel, text) in scaffold(&name, opts.smithers_path.as_deref()) {
        let path = opts.dir.join(rel);
        let io = |source| InitError::Io {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&path, text).map_err(io)?;
        written.push(path);
    }
    Ok(written)
}
