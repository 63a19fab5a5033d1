//! Outside programs the client tests drive (Java, Node.js, Python drivers):
//! finding them with an error that names the package and the installer, and
//! compiling the JDBC test programs.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's PostgreSQL JDBC driver (package libpostgresql-jdbc-java).
pub const JDBC_JAR: &str = "/usr/share/java/postgresql.jar";

/// `path`, or an error naming `what` and scripts/install-deps.
pub fn require(path: &Path, what: &str) -> anyhow::Result<PathBuf> {
    anyhow::ensure!(
        path.exists(),
        "{what} not found at {}: run scripts/install-deps",
        path.display()
    );
    Ok(path.to_path_buf())
}

/// The first `name` on PATH, or an error naming `what` and scripts/install-deps.
pub fn require_command(name: &str, what: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{what} (`{name}`) not found on PATH: run scripts/install-deps"))
}

/// Compiles the Java program `source` against the JDBC driver into `out_dir`
/// (checking that `java` is there to run it); returns the classpath to run
/// it with. Blocking: javac takes a few seconds.
pub fn compile_jdbc_program(source: &Path, out_dir: &Path) -> anyhow::Result<String> {
    let jar = require(
        Path::new(JDBC_JAR),
        "the PostgreSQL JDBC driver (Debian package libpostgresql-jdbc-java)",
    )?;
    let javac = require_command(
        "javac",
        "a Java compiler (Debian package default-jdk-headless)",
    )?;
    require_command(
        "java",
        "a Java runtime (Debian package default-jdk-headless)",
    )?;
    let out = Command::new(javac)
        .arg("-d")
        .arg(out_dir)
        .arg("-cp")
        .arg(&jar)
        .arg(source)
        .output()
        .context("run javac")?;
    anyhow::ensure!(
        out.status.success(),
        "javac {} failed ({}): {}",
        source.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(format!("{}:{}", jar.display(), out_dir.display()))
}
