//! The `bpf(2)` calls the cgroup v2 device filter needs, as runc's
//! `libcontainer/cgroups/devices/ebpf_linux.go` (`LoadAttachCgroupDeviceFilter`) and
//! youki's `libcgroups/src/v2/devices/bpf.rs` make them: load a
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program, attach it to the cgroup directory with
//! `BPF_F_ALLOW_MULTI`, then detach the programs that were attached before (so that
//! re-applying replaces the filter instead of stacking). Raw syscalls over the kernel's
//! `union bpf_attr` layouts (no crate: the four commands take a few fixed structs).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// Errors loading or attaching a device filter.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("load the device filter: {source}{}", if log.is_empty() { String::new() } else { format!(" (verifier: {log})") })]
    Load { source: std::io::Error, log: String },
    #[error("{op} device filter of cgroup {path}: {source}")]
    Cgroup {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct ProgQueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised `union bpf_attr` prefix for `cmd`, and its
    // size is passed with it; the kernel zero-extends the rest.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel just returned this new descriptor to us.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// Loads `insns` (encoded `struct bpf_insn`s) as a cgroup device program.
pub fn load_device_program(insns: &[u64]) -> Result<OwnedFd, BpfError> {
    let license = CString::new("Apache").expect("no NUL");
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        ..Default::default()
    };
    bpf(BPF_PROG_LOAD, &mut attr).map(owned).map_err(|source| {
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        BpfError::Load {
            source,
            log: String::from_utf8_lossy(&log[..end]).trim().to_string(),
        }
    })
}

/// The ids of the device programs attached to the cgroup itself.
fn attached(cgroup: &OwnedFd) -> std::io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut attr = ProgQueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut attr)?;
    ids.truncate(attr.prog_cnt as usize);
    Ok(ids)
}

/// Loads the program and makes it the cgroup's only device filter: attached with
/// `BPF_F_ALLOW_MULTI`, then the previously attached ones detached.
pub fn attach_device_filter(cgroup_dir: &Path, insns: &[u64]) -> Result<(), BpfError> {
    let err = |op: &'static str| {
        let path = cgroup_dir.display().to_string();
        move |source| BpfError::Cgroup { op, path, source }
    };
    let prog = load_device_program(insns)?;
    let dir = std::fs::File::open(cgroup_dir).map_err(err("open"))?;
    let dir = OwnedFd::from(dir);
    let old = attached(&dir).map_err(err("query"))?;
    let mut attr = ProgAttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(err("attach"))?;
    for id in old {
        let mut get = GetFdByIdAttr {
            prog_id: id,
            ..Default::default()
        };
        let Ok(fd) = bpf(BPF_PROG_GET_FD_BY_ID, &mut get).map(owned) else {
            continue; // gone meanwhile
        };
        let mut detach = ProgAttachAttr {
            target_fd: dir.as_raw_fd() as u32,
            attach_bpf_fd: fd.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            ..Default::default()
        };
        bpf(BPF_PROG_DETACH, &mut detach).map_err(err("detach the previous"))?;
    }
    Ok(())
}

/// How many device programs are attached to the cgroup itself (for tests).
pub fn attached_device_programs(cgroup_dir: &Path) -> std::io::Result<usize> {
    let dir = OwnedFd::from(std::fs::File::open(cgroup_dir)?);
    attached(&dir).map(|ids| ids.len())
}
