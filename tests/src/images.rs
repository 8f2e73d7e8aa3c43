//! Test and demo images, built locally (nothing can be pulled here).
//!
//! `mkube-test/busybox:1` is a `docker import` of a tiny rootfs: Debian's
//! static busybox plus symlinks for the applets tests use (`sh`, `httpd`,
//! `sleep`, `wget`, `nc`, ...) and `/www/index.html` for `httpd -h /www`.
//! Building is idempotent; parallel test processes may race to import and
//! both succeed with the same content.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The busybox test image.
pub const BUSYBOX: &str = "mkube-test/busybox:1";

const APPLETS: &[&str] = &[
    "sh", "httpd", "sleep", "wget", "nc", "echo", "cat", "ls", "true", "false", "env", "ps",
    "kill", "date", "printf", "tail", "head", "sed", "grep", "mkdir", "rm", "touch", "test", "id",
    "hostname", "uptime",
];

/// Builds [`BUSYBOX`] unless the daemon has it; returns its name.
pub fn ensure_busybox() -> Result<&'static str> {
    if image_exists(BUSYBOX)? {
        return Ok(BUSYBOX);
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("no static busybox binary: apt-get install busybox-static")?;
    let root = std::env::temp_dir().join(format!("mkube-busybox-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let result = build_rootfs(&root, &busybox).and_then(|()| import(&root, BUSYBOX));
    let _ = std::fs::remove_dir_all(&root);
    result.map(|()| BUSYBOX)
}

/// Whether the daemon has `image`.
pub fn image_exists(image: &str) -> Result<bool> {
    let status = Command::new("docker")
        .args(["image", "inspect", image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running the docker CLI (is docker installed?)")?;
    Ok(status.success())
}

fn build_rootfs(root: &Path, busybox: &Path) -> Result<()> {
    for dir in ["bin", "tmp", "www", "etc"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    std::fs::copy(busybox, root.join("bin/busybox")).context("copying busybox")?;
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    std::fs::write(root.join("www/index.html"), "ok\n")?;
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n")?;
    Ok(())
}

fn import(root: &Path, image: &str) -> Result<()> {
    let tar = Command::new("tar")
        .arg("-C")
        .arg(root)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .context("running tar")?;
    let Some(stdout) = tar.stdout else {
        bail!("tar gave no output")
    };
    let out = Command::new("docker")
        .args([
            "import",
            "--change",
            "CMD [\"/bin/sh\"]",
            "--change",
            "ENV PATH=/bin",
            "-",
            image,
        ])
        .stdin(stdout)
        .output()
        .context("running docker import")?;
    if !out.status.success() {
        bail!(
            "docker import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
