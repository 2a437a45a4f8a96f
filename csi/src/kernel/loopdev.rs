//! Loop devices through their ioctls (loop(4)): LOOP_CTL_GET_FREE on /dev/loop-control,
//! LOOP_CONFIGURE (LOOP_SET_FD + LOOP_SET_STATUS64 on kernels before 5.8),
//! LOOP_SET_STATUS64 for autoclear, LOOP_CLR_FD, LOOP_SET_CAPACITY. Which device backs
//! which file is read from sysfs (`/sys/block/loopN/loop/backing_file`).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::{KernelError, Result};

const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;
const LOOP_SET_CAPACITY: libc::c_ulong = 0x4C07;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;

/// `struct loop_info64` (linux/loop.h).
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` (linux/loop.h, 5.8+).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

fn zeroed_info() -> LoopInfo64 {
    // SAFETY: loop_info64 is plain integers and byte arrays; all-zero is valid.
    unsafe { std::mem::zeroed() }
}

fn errno(op: &'static str, object: &Path) -> impl FnOnce(Errno) -> KernelError {
    let object = object.display().to_string();
    move |errno| KernelError::Errno { op, object, errno }
}

fn open(path: &Path, write: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| KernelError::Io {
            op: "open",
            object: path.display().to_string(),
            source,
        })
}

/// ioctl with a pointer or integer argument; the result, or errno.
fn ioctl<T>(file: &File, request: libc::c_ulong, arg: T) -> nix::Result<libc::c_int> {
    // SAFETY: every request here is given the argument type loop(4) documents for it.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), request as _, arg) };
    Errno::result(r)
}

/// Attaches `image` (read-write, or read-only: LO_FLAGS_READ_ONLY over a read-only
/// descriptor) to a free loop device, retrying when another process takes the free device
/// first.
pub fn attach(image: &Path, read_only: bool) -> Result<PathBuf> {
    let backing = open(image, !read_only)?;
    let control = open(Path::new("/dev/loop-control"), true)?;
    let mut last = Errno::EBUSY;
    for _ in 0..16 {
        let n = ioctl(&control, LOOP_CTL_GET_FREE, 0 as libc::c_ulong)
            .map_err(errno("find a free loop device for", image))?;
        let device = PathBuf::from(format!("/dev/loop{n}"));
        let dev = open(&device, true)?;
        let mut name = [0u8; LO_NAME_SIZE];
        let path = image.as_os_str().as_encoded_bytes();
        let len = path.len().min(LO_NAME_SIZE - 1);
        name[..len].copy_from_slice(&path[..len]);
        let mut info = zeroed_info();
        info.lo_file_name = name;
        if read_only {
            info.lo_flags = LO_FLAGS_READ_ONLY;
        }
        let config = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size: 0,
            info,
            reserved: [0; 8],
        };
        match ioctl(&dev, LOOP_CONFIGURE, &config as *const LoopConfig) {
            Ok(_) => return Ok(device),
            Err(Errno::EBUSY) => last = Errno::EBUSY,
            // Kernels before 5.8: the two-step way.
            Err(Errno::EINVAL | Errno::ENOTTY) => {
                match ioctl(&dev, LOOP_SET_FD, backing.as_raw_fd() as libc::c_ulong) {
                    Ok(_) => {}
                    Err(Errno::EBUSY) => {
                        last = Errno::EBUSY;
                        continue;
                    }
                    Err(e) => return Err(errno("attach", image)(e)),
                }
                if let Err(e) = ioctl(&dev, LOOP_SET_STATUS64, &info as *const LoopInfo64) {
                    let _ = ioctl(&dev, LOOP_CLR_FD, 0 as libc::c_ulong);
                    return Err(errno("set the status of", &device)(e));
                }
                return Ok(device);
            }
            Err(e) => return Err(errno("attach", image)(e)),
        }
    }
    Err(errno("attach", image)(last))
}

/// The loop device whose backing file is `image` or what `image` resolves to, by sysfs'
/// `backing_file` (the kubelet's `getLoopDeviceFromSysfs`), the file's ` (deleted)` mark
/// ignored ([`clean_backing_file_path`]); a device whose file was unlinked is taken only
/// when no device holds a live file by that name.
pub fn find(image: &Path) -> Result<Option<PathBuf>> {
    let sys = Path::new("/sys/block");
    let entries = std::fs::read_dir(sys).map_err(|source| KernelError::Io {
        op: "read",
        object: sys.display().to_string(),
        source,
    })?;
    let want = image.as_os_str().as_encoded_bytes();
    let real = std::fs::canonicalize(image).ok();
    let real = real.as_ref().map(|r| r.as_os_str().as_encoded_bytes());
    let mut unlinked = None;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| n.starts_with("loop")) else {
            continue;
        };
        let Ok(backing) = std::fs::read(entry.path().join("loop/backing_file")) else {
            continue;
        };
        let (backing, deleted) = clean_backing_file_path(&backing);
        if backing == want || Some(backing) == real {
            let device = PathBuf::from(format!("/dev/{name}"));
            if !deleted {
                return Ok(Some(device));
            }
            unlinked.get_or_insert(device);
        }
    }
    Ok(unlinked)
}

/// The kubelet's `cleanBackingFilePath`: sysfs' `backing_file` without surrounding
/// whitespace and the `(deleted)` of an unlinked file; whether it had that mark.
pub fn clean_backing_file_path(backing: &[u8]) -> (&[u8], bool) {
    let backing = backing.trim_ascii();
    match backing.strip_suffix(b"(deleted)") {
        Some(path) => (path.trim_ascii(), true),
        None => (backing, false),
    }
}

pub fn set_autoclear(device: &Path) -> Result<()> {
    let dev = open(device, false)?;
    let mut info = zeroed_info();
    ioctl(&dev, LOOP_GET_STATUS64, &mut info as *mut LoopInfo64)
        .map_err(errno("get the status of", device))?;
    info.lo_flags |= LO_FLAGS_AUTOCLEAR;
    ioctl(&dev, LOOP_SET_STATUS64, &info as *const LoopInfo64)
        .map_err(errno("set autoclear on", device))?;
    Ok(())
}

pub fn detach(device: &Path) -> Result<()> {
    let dev = match open(device, false) {
        Ok(dev) => dev,
        Err(KernelError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    match ioctl(&dev, LOOP_CLR_FD, 0 as libc::c_ulong) {
        // ENXIO: not attached (any more).
        Ok(_) | Err(Errno::ENXIO) => Ok(()),
        Err(e) => Err(errno("detach", device)(e)),
    }
}

pub fn refresh_capacity(device: &Path) -> Result<()> {
    let dev = open(device, false)?;
    ioctl(&dev, LOOP_SET_CAPACITY, 0 as libc::c_ulong)
        .map_err(errno("refresh the capacity of", device))?;
    Ok(())
}

/// Whether a block device is read-only, from sysfs (`ro`: 0 or 1).
pub fn read_only(device: &Path) -> Result<bool> {
    let name = device
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let path = Path::new("/sys/class/block").join(name).join("ro");
    let text = std::fs::read_to_string(&path).map_err(|source| KernelError::Io {
        op: "read",
        object: path.display().to_string(),
        source,
    })?;
    Ok(text.trim() == "1")
}

/// A block device's size, from sysfs (`size` is in 512-byte sectors).
pub fn device_size(device: &Path) -> Result<u64> {
    let name = device
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let path = Path::new("/sys/class/block").join(name).join("size");
    let text = std::fs::read_to_string(&path).map_err(|source| KernelError::Io {
        op: "read",
        object: path.display().to_string(),
        source,
    })?;
    text.trim()
        .parse::<u64>()
        .map(|sectors| sectors * 512)
        .map_err(|e| KernelError::Command {
            command: "read size of",
            object: device.display().to_string(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// volume_path_handler_linux_test.go `TestCleanBackingFilePath` (4/4), and whether
    /// the file was unlinked.
    #[test]
    fn backing_file_paths_are_cleaned() {
        let path = "/var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/pvc-1d205234-06cd-4fe4-a7ea-0e8f3e2faf5f/dev/e196ebd3-2ab1-4185-bed4-b997ba38d1dc";
        for (name, input, deleted) in [
            ("regular path", path.to_string(), false),
            ("suffixed with whitespaces", format!("{path}\r\t\n "), false),
            ("suffixed with (deleted)", format!("{path}(deleted)"), true),
            (
                "suffixed with (deleted) and whitespaces",
                format!("{path} (deleted)\t"),
                true,
            ),
        ] {
            assert_eq!(
                clean_backing_file_path(input.as_bytes()),
                (path.as_bytes(), deleted),
                "{name}"
            );
        }
    }
}
