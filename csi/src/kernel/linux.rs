//! The real kernel: loop ioctls (`loopdev`), mount(2)/umount(2) and statvfs through nix,
//! util-linux's `blkid`, e2fsprogs' `mkfs.ext4`, `resize2fs`, `dumpe2fs` and `e2fsck`,
//! and xfsprogs' `mkfs.xfs`, `xfs_db` and `xfs_growfs` (Debian's packages, installed by
//! e2e/scripts/bootstrap.sh).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{MntFlags, MsFlags};

use super::{FileKind, FileStat, FsStats, Kernel, KernelError, Result, loopdev};
use crate::mountinfo::{self, MountInfo};

#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxKernel;

/// The Debian package a command comes from.
fn package(command: &str) -> &'static str {
    match command {
        "blkid" => "util-linux",
        "mkfs.xfs" | "xfs_db" | "xfs_growfs" => "xfsprogs",
        _ => "e2fsprogs",
    }
}

/// Runs a filesystem command on `device` (or a mount point); its stderr is the error
/// message.
fn run(command: &'static str, args: &[&str], device: &Path) -> Result<std::process::Output> {
    Command::new(command)
        .args(args)
        .arg(device)
        .output()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => KernelError::Command {
                command,
                object: device.display().to_string(),
                message: format!("{command} is not installed (Debian's {})", package(command)),
            },
            _ => KernelError::Io {
                op: command,
                object: device.display().to_string(),
                source,
            },
        })
}

fn failed(command: &'static str, device: &Path, output: &std::process::Output) -> KernelError {
    let stderr = String::from_utf8_lossy(&output.stderr);
    KernelError::Command {
        command,
        object: device.display().to_string(),
        message: format!("{} ({})", stderr.trim(), output.status),
    }
}

/// Whether this process has CAP_SYS_RESOURCE (bit 24 of CapEff in /proc/self/status).
pub fn has_cap_sys_resource() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("CapEff:"))?;
            u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

/// The filesystem's size in bytes from `dumpe2fs -h`'s `Block count:` and `Block size:`
/// lines.
pub fn parse_dumpe2fs_size(text: &str) -> Option<u64> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    field("Block count:")?.checked_mul(field("Block size:")?)
}

/// The filesystem's size in bytes from `xfs_db -r -c 'sb 0' -c 'print dblocks' -c 'print
/// blocksize'`'s `dblocks = N` and `blocksize = N` lines.
pub fn parse_xfs_db_size(text: &str) -> Option<u64> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let (key, value) = l.split_once('=')?;
            (key.trim() == name)
                .then(|| value.trim().parse::<u64>().ok())
                .flatten()
        })
    };
    field("dblocks")?.checked_mul(field("blocksize")?)
}

impl Kernel for LinuxKernel {
    fn loop_attach(&self, image: &Path, read_only: bool) -> Result<PathBuf> {
        loopdev::attach(image, read_only)
    }

    fn loop_read_only(&self, device: &Path) -> Result<bool> {
        loopdev::read_only(device)
    }

    fn loop_find(&self, image: &Path) -> Result<Option<PathBuf>> {
        loopdev::find(image)
    }

    fn loop_set_autoclear(&self, device: &Path) -> Result<()> {
        loopdev::set_autoclear(device)
    }

    fn loop_detach(&self, device: &Path) -> Result<()> {
        loopdev::detach(device)
    }

    fn loop_refresh_capacity(&self, device: &Path) -> Result<()> {
        loopdev::refresh_capacity(device)
    }

    fn device_size(&self, device: &Path) -> Result<u64> {
        loopdev::device_size(device)
    }

    fn probe_fs_type(&self, device: &Path) -> Result<Option<String>> {
        // -p: probe the device itself, not blkid's cache. Exit 2: nothing found.
        let out = run("blkid", &["-p", "-s", "TYPE", "-o", "value"], device)?;
        match out.status.code() {
            Some(0) => {
                let fs = String::from_utf8_lossy(&out.stdout).trim().to_string();
                Ok((!fs.is_empty()).then_some(fs))
            }
            Some(2) => Ok(None),
            _ => Err(failed("blkid", device, &out)),
        }
    }

    fn mkfs_ext4(&self, device: &Path) -> Result<()> {
        // -m 0: no blocks reserved for root; the volume's user gets all of it.
        let out = run("mkfs.ext4", &["-q", "-F", "-m", "0"], device)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(failed("mkfs.ext4", device, &out))
        }
    }

    fn mkfs_xfs(&self, device: &Path) -> Result<()> {
        // -f: mount-utils' force flag (the device was probed empty just before).
        let out = run("mkfs.xfs", &["-q", "-f"], device)?;
        if out.status.success() {
            return Ok(());
        }
        let mut err = failed("mkfs.xfs", device, &out);
        // A refusal is followed by the whole usage text: keep what precedes it.
        if let KernelError::Command { message, .. } = &mut err
            && let Some((cause, _)) = message.split_once("\nUsage:")
        {
            *message = format!("{} ({})", cause.trim(), out.status);
        }
        Err(err)
    }

    fn resize2fs(&self, device: &Path) -> Result<()> {
        let out = run("resize2fs", &[], device)?;
        if out.status.success() {
            return Ok(());
        }
        let mut err = failed("resize2fs", device, &out);
        // The kernel's ext4 online resize is EPERM without CAP_SYS_RESOURCE.
        if let KernelError::Command { message, .. } = &mut err
            && message.contains("Permission denied")
            && !has_cap_sys_resource()
        {
            message.push_str(": online resize needs CAP_SYS_RESOURCE, which rekube-csi lacks (run it privileged)");
        }
        Err(err)
    }

    fn ext4_size(&self, device: &Path) -> Result<u64> {
        let out = run("dumpe2fs", &["-h"], device)?;
        if !out.status.success() {
            return Err(failed("dumpe2fs", device, &out));
        }
        parse_dumpe2fs_size(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| {
            KernelError::Command {
                command: "dumpe2fs",
                object: device.display().to_string(),
                message: "no block count and block size in its output".into(),
            }
        })
    }

    fn e2fsck(&self, device: &Path) -> Result<()> {
        let out = run("e2fsck", &["-f", "-p"], device)?;
        // 0: clean; 1: errors corrected. Anything else needs a human (e2fsck(8)).
        match out.status.code() {
            Some(0 | 1) => Ok(()),
            _ => {
                let mut err = failed("e2fsck", device, &out);
                if let KernelError::Command { message, .. } = &mut err {
                    let stdout = String::from_utf8_lossy(&out.stdout);
                    if !stdout.trim().is_empty() {
                        *message = format!("{}: {message}", stdout.trim());
                    }
                }
                Err(err)
            }
        }
    }

    fn xfs_size(&self, device: &Path) -> Result<u64> {
        let args = [
            "-r",
            "-c",
            "sb 0",
            "-c",
            "print dblocks",
            "-c",
            "print blocksize",
        ];
        let out = run("xfs_db", &args, device)?;
        if !out.status.success() {
            return Err(failed("xfs_db", device, &out));
        }
        parse_xfs_db_size(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| {
            KernelError::Command {
                command: "xfs_db",
                object: device.display().to_string(),
                message: "no dblocks and blocksize in its output".into(),
            }
        })
    }

    fn xfs_growfs(&self, mount_point: &Path) -> Result<()> {
        let out = run("xfs_growfs", &["-d"], mount_point)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(failed("xfs_growfs", mount_point, &out))
        }
    }

    fn mount(
        &self,
        source: &Path,
        target: &Path,
        fs_type: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()> {
        nix::mount::mount(Some(source), target, fs_type, flags, data).map_err(|errno| {
            KernelError::Errno {
                op: "mount",
                object: format!(
                    "{} on {} (type {}, flags {flags:?})",
                    source.display(),
                    target.display(),
                    fs_type.unwrap_or("none")
                ),
                errno,
            }
        })
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        nix::mount::umount2(target, MntFlags::UMOUNT_NOFOLLOW).map_err(|errno| KernelError::Errno {
            op: "unmount",
            object: target.display().to_string(),
            errno,
        })
    }

    fn mounts(&self) -> Result<Vec<MountInfo>> {
        let path = "/proc/self/mountinfo";
        let text = std::fs::read_to_string(path).map_err(|source| KernelError::Io {
            op: "read",
            object: path.into(),
            source,
        })?;
        Ok(mountinfo::parse(&text)?)
    }

    fn stat(&self, path: &Path) -> Result<Option<FileStat>> {
        match std::fs::metadata(path) {
            Ok(m) => {
                let t = m.file_type();
                let kind = if t.is_dir() {
                    FileKind::Dir
                } else if t.is_file() {
                    FileKind::File
                } else if t.is_block_device() {
                    FileKind::BlockDevice
                } else {
                    FileKind::Other
                };
                Ok(Some(FileStat {
                    dev: m.dev(),
                    ino: m.ino(),
                    rdev: m.rdev(),
                    kind,
                }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(KernelError::Io {
                op: "stat",
                object: path.display().to_string(),
                source,
            }),
        }
    }

    fn statvfs(&self, path: &Path) -> Result<FsStats> {
        let s = nix::sys::statvfs::statvfs(path).map_err(|errno| KernelError::Errno {
            op: "statvfs",
            object: path.display().to_string(),
            errno,
        })?;
        let frsize = s.fragment_size() as u64;
        let total_bytes = s.blocks() as u64 * frsize;
        let free_bytes = s.blocks_free() as u64 * frsize;
        let available_bytes = s.blocks_available() as u64 * frsize;
        let total_inodes = s.files() as u64;
        let free_inodes = s.files_free() as u64;
        Ok(FsStats {
            total_bytes,
            available_bytes,
            used_bytes: total_bytes.saturating_sub(free_bytes),
            total_inodes,
            free_inodes,
            used_inodes: total_inodes.saturating_sub(free_inodes),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filesystem_size_is_block_count_times_block_size() {
        let out = "dumpe2fs 1.47.0 (5-Feb-2023)\nFilesystem volume name:   <none>\n\
                   Inode count:              16384\nBlock count:              131072\n\
                   Reserved block count:     0\nFree blocks:              121559\n\
                   Block size:               1024\nFragment size:            1024\n";
        assert_eq!(parse_dumpe2fs_size(out), Some(128 << 20));
        assert_eq!(parse_dumpe2fs_size("Block count: 10\n"), None);
        assert_eq!(
            parse_dumpe2fs_size("Block size: 4096\nBlock count: x\n"),
            None
        );
    }

    #[test]
    fn the_xfs_size_is_dblocks_times_blocksize() {
        // xfs_db 6.1.0 on a 320 MiB xfs.
        let out = "dblocks = 81920\nblocksize = 4096\n";
        assert_eq!(parse_xfs_db_size(out), Some(320 << 20));
        assert_eq!(parse_xfs_db_size("blocksize = 4096\n"), None);
        assert_eq!(parse_xfs_db_size("dblocks = x\nblocksize = 4096\n"), None);
        // Other fields whose names contain ours are not taken for them.
        assert_eq!(
            parse_xfs_db_size("rblocks = 7\ndblocks = 2\nsectsize = 512\nblocksize = 4096\n"),
            Some(8192)
        );
    }

    #[test]
    fn a_missing_command_names_its_package() {
        let err = run("mkfs.rekube-missing", &[], Path::new("/dev/null")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "mkfs.rekube-missing /dev/null: mkfs.rekube-missing is not installed (Debian's e2fsprogs)"
        );
        assert_eq!(package("xfs_growfs"), "xfsprogs");
        assert_eq!(package("blkid"), "util-linux");
    }
}
