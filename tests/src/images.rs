//! Test and demo images, built locally (nothing can be pulled here).
//!
//! `mkube-test/busybox:2` is a `docker import` of a tiny rootfs: Debian's
//! static busybox plus symlinks for the applets tests use (`sh`, `httpd`,
//! `sleep`, `wget`, `nc`, ...) and `/www/index.html` for `httpd -h /www`.
//! Building is idempotent; parallel test processes may race to import and
//! both succeed with the same content.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The busybox test image.
pub const BUSYBOX: &str = "mkube-test/busybox:2";

const APPLETS: &[&str] = &[
    "sh", "httpd", "sleep", "wget", "nc", "echo", "cat", "ls", "true", "false", "env", "ps",
    "kill", "date", "printf", "tail", "head", "sed", "grep", "mkdir", "rm", "touch", "test", "id",
    "hostname", "uptime", "nslookup",
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

/// An image holding the workspace's `binaries` (from `dir`) and the shared
/// libraries they link (found with `ldd`), so that our own processes run
/// as containers on private networks; tagged by a hash of the binaries, so
/// a rebuild makes a new image. Returns its name.
pub fn ensure_mkube_image(dir: &Path, binaries: &[&str]) -> Result<String> {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in binaries {
        let meta = std::fs::metadata(dir.join(b))
            .with_context(|| format!("{} is not built", dir.join(b).display()))?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64);
        for v in [meta.len(), modified] {
            hash ^= v;
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    let image = format!("mkube-e2e/mkube:{:012x}", hash & 0xffff_ffff_ffff);
    if image_exists(&image)? {
        return Ok(image);
    }
    let root = std::env::temp_dir().join(format!("mkube-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let result = mkube_rootfs(&root, dir, binaries).and_then(|()| import(&root, &image));
    let _ = std::fs::remove_dir_all(&root);
    result?;
    // Images of earlier builds go (one still in use stays: rmi refuses it).
    if let Ok(out) = Command::new("docker")
        .args([
            "images",
            "mkube-e2e/mkube",
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ])
        .output()
    {
        for old in String::from_utf8_lossy(&out.stdout).lines() {
            if old != image {
                let _ = Command::new("docker")
                    .args(["rmi", old])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
    Ok(image)
}

fn mkube_rootfs(root: &Path, dir: &Path, binaries: &[&str]) -> Result<()> {
    for d in ["bin", "tmp", "etc", "exports"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n")?;
    std::fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n")?;
    let mut libs = std::collections::BTreeSet::new();
    for b in binaries {
        let path = dir.join(b);
        std::fs::copy(&path, root.join("bin").join(b))
            .with_context(|| format!("copying {}", path.display()))?;
        let out = Command::new("ldd")
            .arg(&path)
            .output()
            .context("running ldd")?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
            let lib = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line
                    .split_whitespace()
                    .next()
                    .filter(|p| p.starts_with('/')),
            };
            if let Some(lib) = lib.filter(|l| l.starts_with('/')) {
                libs.insert(PathBuf::from(lib));
            }
        }
    }
    for lib in libs {
        let target = root.join(lib.strip_prefix("/").unwrap_or(&lib));
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let real = std::fs::canonicalize(&lib).unwrap_or(lib.clone());
        std::fs::copy(&real, &target).with_context(|| format!("copying {}", lib.display()))?;
    }
    Ok(())
}
