//! Test and benchmark root filesystems made from Debian's busybox-static (the issue's
//! "test images built from busybox-static, no Docker needed"): `/bin/busybox` and a
//! symlink per applet (what `busybox --install -s /bin` makes), a minimal /etc, and the
//! mount points a container needs. Also as two overlay layers.

use std::path::{Path, PathBuf};

/// Where Debian's busybox-static installs busybox.
pub const BUSYBOX_CANDIDATES: [&str; 2] = ["/bin/busybox", "/usr/bin/busybox"];

/// The host's busybox, if installed.
pub fn find_busybox() -> Option<PathBuf> {
    BUSYBOX_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

fn io(op: &str, path: &Path) -> impl FnOnce(std::io::Error) -> std::io::Error {
    let msg = format!("{op} {}", path.display());
    move |e| std::io::Error::new(e.kind(), format!("{msg}: {e}"))
}

/// Lays a busybox root filesystem out in `dir`: `bin/busybox` (from `busybox`), one
/// symlink per applet in `bin/`, `/etc/passwd` (root, app 1000, nobody), `/etc/group`,
/// and empty proc, sys, dev, tmp (1777), root, home/app.
pub fn build_rootfs(dir: &Path, busybox: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root",
        "home/app", "var", "run",
    ] {
        std::fs::create_dir_all(dir.join(d)).map_err(io("create", &dir.join(d)))?;
    }
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    let target = dir.join("bin/busybox");
    std::fs::copy(busybox, &target).map_err(io("copy", busybox))?;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))?;
    let list = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(io("run", busybox))?;
    for applet in String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        if applet == "busybox" || applet.contains('/') {
            continue;
        }
        let link = dir.join("bin").join(applet);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink("busybox", &link).map_err(io("symlink", &link))?;
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\nwheel:x:10:app\napp:x:1000:\nnogroup:x:65534:\n",
    )?;
    std::fs::write(dir.join("etc/layer"), "base\n")?;
    std::fs::write(dir.join("etc/base-only"), "from the base layer\n")?;
    Ok(())
}

/// Two overlay layers in `dir`: `base/` (the whole rootfs) and `top/` (overrides
/// `/etc/layer`, adds `/etc/top-only`). Returned top first, as overlayfs wants them.
pub fn build_layers(dir: &Path, busybox: &Path) -> std::io::Result<Vec<PathBuf>> {
    let base = dir.join("base");
    let top = dir.join("top");
    build_rootfs(&base, busybox)?;
    std::fs::create_dir_all(top.join("etc"))?;
    std::fs::write(top.join("etc/layer"), "top\n")?;
    std::fs::write(top.join("etc/top-only"), "from the top layer\n")?;
    Ok(vec![top, base])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_rootfs_with_applets() {
        let Some(busybox) = find_busybox() else {
            rekube_crds::testing::missing_prerequisite(
                "busybox is not installed (apt-get install busybox-static)",
            );
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let layers = build_layers(dir.path(), &busybox).unwrap();
        assert_eq!(layers[0], dir.path().join("top"));
        let base = &layers[1];
        assert!(base.join("bin/busybox").is_file());
        assert_eq!(
            std::fs::read_link(base.join("bin/sh")).unwrap(),
            PathBuf::from("busybox")
        );
        assert!(base.join("bin/true").exists());
        assert!(
            std::fs::read_to_string(base.join("etc/passwd"))
                .unwrap()
                .contains("app:x:1000:1000")
        );
    }
}
