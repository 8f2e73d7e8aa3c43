//! The real `mkctl` binary for tests: a config of its own per test, and
//! runs that check the exit code and stderr.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::cluster::{Cluster, binary};
use anyhow::{Context, Result, bail};

/// `mkctl` with a config file of its own.
pub struct Mkctl {
    /// The built binary.
    pub bin: PathBuf,
    /// Its config file (`MKUBECONFIG`).
    pub config: PathBuf,
    /// The directory holding the config and the token.
    pub dir: PathBuf,
}

impl Mkctl {
    /// A config file with a context for `cluster`, as its operator (the
    /// admin token, as `scripts/demo` writes it).
    pub fn new(cluster: &Cluster) -> Result<Mkctl> {
        Mkctl::with_role(cluster, "admin")
    }

    /// A config file with a context for `cluster` holding a `role` token.
    pub fn with_role(cluster: &Cluster, role: &str) -> Result<Mkctl> {
        let dir = cluster.dir().join(format!("mkctl-{role}"));
        Mkctl::configure(
            &dir,
            &cluster.master_addrs.join(","),
            &cluster.pki().token(role)?,
            &cluster.pki().ca_file(),
        )
    }

    /// A config file in `dir` with a context for the masters at `servers`
    /// (comma-separated), presenting `token` and trusting `ca`.
    pub fn configure(dir: &Path, servers: &str, token: &str, ca: &Path) -> Result<Mkctl> {
        std::fs::create_dir_all(dir)?;
        let token_file = dir.join("token");
        std::fs::write(&token_file, token)?;
        let m = Mkctl {
            bin: bin()?,
            config: dir.join("config"),
            dir: dir.to_path_buf(),
        };
        let out = m.run(&[
            "config",
            "set-context",
            "e2e",
            "--servers",
            servers,
            "--token-file",
            &token_file.display().to_string(),
            "--certificate-authority",
            &ca.display().to_string(),
        ])?;
        ok(&out)?;
        Ok(m)
    }

    /// The command, set to this config and to nothing from the environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env("MKUBECONFIG", &self.config)
            .env_remove("MKUBE_SERVER")
            .env_remove("MKUBE_TOKEN")
            .env("RUST_BACKTRACE", "1");
        c
    }

    /// Runs to its end.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        Ok(self.command(args).output()?)
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args)?;
        ok(&out).with_context(|| format!("mkctl {}", args.join(" ")))
    }

    /// Runs and expects exit code 1 with one line on stderr; returns it.
    pub fn fails(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args)?;
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        if out.status.code() != Some(1) {
            bail!(
                "mkctl {}: exit {:?}, stderr {stderr}",
                args.join(" "),
                out.status.code()
            );
        }
        let lines: Vec<&str> = stderr.lines().collect();
        if lines.len() != 1 || stderr.contains("panicked") || stderr.contains("backtrace") {
            bail!("mkctl {}: not one clear line: {stderr:?}", args.join(" "));
        }
        Ok(lines[0].to_string())
    }

    /// Writes `text` to `name` in this directory; returns its path.
    pub fn file(&self, name: &str, text: &str) -> Result<String> {
        let path = self.dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text)?;
        Ok(path.display().to_string())
    }
}

/// The built `mkctl`.
pub fn bin() -> Result<PathBuf> {
    binary("mkctl")
}

/// Stdout of a run that succeeded; else the exit code and both outputs.
pub fn ok(out: &Output) -> Result<String> {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!(
            "exit {:?}\nstdout: {stdout}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}
