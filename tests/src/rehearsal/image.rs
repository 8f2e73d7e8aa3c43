//! The rehearsal's VM image: Debian 12 (bookworm) made here with
//! `debootstrap` from Debian's packages and `docker import`ed, shaped like
//! the Azure image the template names (`Debian:debian-12:12-gen2`): systemd
//! as PID 1, cloud-init (NoCloud seed, as the Azure datasource's custom data
//! is not available off Azure), and the packages cloud-init installs
//! (`docker.io`, `curl`) already present to spare each VM the download (its
//! `apt-get` still runs).
//!
//! The one piece no Azure VM has is [`BOOT`], the container's entry point:
//! the hypervisor's part. It routes the instance metadata address
//! (169.254.169.254:80) and Azure's public endpoints (names resolved to
//! [`AZURE_IP`]) to the doubles, trusts the rehearsal's CA, then runs
//! systemd.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::images::image_exists;

/// The image's name: its tag is a hash of the package list and [`BOOT`],
/// so a change to either makes a new image.
pub fn vm_image() -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in PACKAGES.join(" ").bytes().chain(BOOT.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("mkube-rehearsal/vm:bookworm-{:08x}", hash & 0xffff_ffff)
}

/// Where Azure's public endpoints resolve inside a VM (TEST-NET-1).
pub const AZURE_IP: &str = "192.0.2.10";

/// Packages beyond debootstrap's minimal base.
const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "cloud-init",
    "docker.io",
    "curl",
    "iptables",
    "iproute2",
    "procps",
    "locales",
    "python3",
];

/// The entry point: `IMDS` and `AZURE` name the doubles (HOST:PORT);
/// `PRIVATE_GATEWAY` is the private subnet's gateway.
pub const BOOT: &str = r#"#!/bin/sh
# The rehearsal's hypervisor: not part of any Azure VM (see tests/src/rehearsal/image.rs).
set -e
# IPv4 on the private subnet alone (the public side is IPv6), and the
# default route through its gateway (the NAT gateway's path), as on Azure.
private=$(ip -o route get "$PRIVATE_GATEWAY" | sed -n 's/.* dev \([^ ]*\).*/\1/p')
for dev in $(ip -o -4 addr show | awk '{print $2}' | sort -u); do
    if [ "$dev" != lo ] && [ "$dev" != "$private" ]; then ip -4 addr flush dev "$dev"; fi
done
ip -4 route replace default via "$PRIVATE_GATEWAY" dev "$private"
iptables -t nat -A OUTPUT -d 169.254.169.254 -p tcp --dport 80 -j DNAT --to-destination "$IMDS"
iptables -t nat -A OUTPUT -d 192.0.2.10 -p tcp --dport 443 -j DNAT --to-destination "$AZURE"
if [ -s /etc/rehearsal/ca.crt ]; then
    cp /etc/rehearsal/ca.crt /usr/local/share/ca-certificates/mkube-rehearsal.crt
    update-ca-certificates >/dev/null 2>&1
fi
exec /sbin/init
"#;

/// Builds [`VM_IMAGE`] unless the daemon has it (a minute or two: the
/// packages come from Debian's mirror).
pub fn ensure_vm_image() -> Result<String> {
    let image = vm_image();
    if image_exists(&image)? {
        return Ok(image);
    }
    let root = std::env::temp_dir().join(format!("mkube-rehearsal-vm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let result = build(&root, &image);
    let _ = std::fs::remove_dir_all(&root);
    result.map(|()| image)
}

fn run(what: &str, command: &mut Command) -> Result<()> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: could not run it"))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        bail!(
            "{what} failed:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(())
}

fn build(root: &Path, image: &str) -> Result<()> {
    let mirror = std::env::var("MKUBE_DEBIAN_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".into());
    let rootfs = root.join("rootfs");
    run(
        "debootstrap (apt-get install debootstrap)",
        Command::new("debootstrap")
            .args(["--variant=minbase", "--include=ca-certificates", "bookworm"])
            .arg(&rootfs)
            .arg(&mirror),
    )?;
    let install = format!(
        "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends {} \
         && sed -i 's/^# *en_US.UTF-8/en_US.UTF-8/' /etc/locale.gen && locale-gen \
         && apt-get clean && rm -rf /var/lib/apt/lists/*",
        PACKAGES.join(" ")
    );
    run(
        "installing the VM's packages",
        Command::new("chroot")
            .arg(&rootfs)
            .args(["sh", "-c", &install]),
    )?;
    for dir in ["var/lib/cloud/seed/nocloud", "etc/rehearsal"] {
        std::fs::create_dir_all(rootfs.join(dir))?;
    }
    let boot = rootfs.join("usr/local/sbin/rehearsal-boot");
    std::fs::write(&boot, BOOT)?;
    std::fs::set_permissions(&boot, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    // As on a cloud image: no machine id until first boot.
    std::fs::write(rootfs.join("etc/machine-id"), "")?;
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .context("running tar")?;
    let stdout = tar.stdout.context("tar's output")?;
    let out = Command::new("docker")
        .args([
            "import",
            "-c",
            "ENTRYPOINT [\"/usr/local/sbin/rehearsal-boot\"]",
            "-",
            image,
        ])
        .stdin(stdout)
        .output()
        .context("running docker import")?;
    if !out.status.success() {
        bail!(
            "docker import {image}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
