//! `/proc/self/mountinfo`, parsed (proc(5)): which paths are mount points, and of which
//! device. Pure, so that it is tested on fixed text.

use std::path::PathBuf;

/// One mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// The device (st_dev) of the mounted filesystem.
    pub major: u32,
    pub minor: u32,
    /// The directory of that filesystem mounted here (`/` unless a bind mount of a subtree).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    /// The per-mount options (`rw,nosuid,relatime`).
    pub options: String,
    pub fs_type: String,
    pub source: String,
}

impl MountInfo {
    /// Whether this mount is read-only.
    pub fn read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mountinfo line {line}: {reason}: {text:?}")]
pub struct MountInfoError {
    pub line: usize,
    pub reason: &'static str,
    pub text: String,
}

/// Undoes the kernel's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the whole of a mountinfo file.
pub fn parse(text: &str) -> Result<Vec<MountInfo>, MountInfoError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse_line(i + 1, l))
        .collect()
}

fn parse_line(line: usize, text: &str) -> Result<MountInfo, MountInfoError> {
    let err = |reason| MountInfoError {
        line,
        reason,
        text: text.to_string(),
    };
    let fields: Vec<&str> = text.split(' ').collect();
    let sep = fields
        .iter()
        .position(|f| *f == "-")
        .ok_or_else(|| err("no \"-\" separator"))?;
    if sep < 6 || fields.len() < sep + 3 {
        return Err(err("too few fields"));
    }
    let (major, minor) = fields[2]
        .split_once(':')
        .ok_or_else(|| err("bad major:minor"))?;
    Ok(MountInfo {
        major: major.parse().map_err(|_| err("bad major"))?,
        minor: minor.parse().map_err(|_| err("bad minor"))?,
        root: PathBuf::from(unescape(fields[3])),
        mount_point: PathBuf::from(unescape(fields[4])),
        options: fields[5].to_string(),
        fs_type: fields[sep + 1].to_string(),
        source: unescape(fields[sep + 2]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
36 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs udev rw,size=1000k
100 22 7:3 / /tmp/csi\\040staging rw,relatime shared:50 - ext4 /dev/loop3 rw
101 22 7:3 / /tmp/target rw,relatime shared:50 - ext4 /dev/loop3 rw
102 22 254:0 /var/lib/rekube-csi/hostpath/rk-1 /tmp/hp rw master:1 - ext4 /dev/vda rw
103 22 0:5 /loop3 /tmp/block ro,nosuid - devtmpfs udev rw
";

    #[test]
    fn parses_devices_roots_and_escaped_paths() {
        let mounts = parse(SAMPLE).unwrap();
        assert_eq!(mounts.len(), 6);
        assert_eq!(
            mounts[2],
            MountInfo {
                major: 7,
                minor: 3,
                root: "/".into(),
                mount_point: "/tmp/csi staging".into(),
                options: "rw,relatime".into(),
                fs_type: "ext4".into(),
                source: "/dev/loop3".into(),
            }
        );
        assert_eq!(
            mounts[4].root,
            PathBuf::from("/var/lib/rekube-csi/hostpath/rk-1")
        );
        assert_eq!(mounts[5].root, PathBuf::from("/loop3"));
        // No optional fields at all.
        assert_eq!(mounts[5].fs_type, "devtmpfs");
        assert!(mounts[5].read_only());
        assert!(!mounts[4].read_only());
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_line() {
        let err = parse("22 1 254:0 / / rw shared:1 ext4 /dev/vda rw").unwrap_err();
        assert_eq!(err.line, 1);
        assert_eq!(err.reason, "no \"-\" separator");
        assert!(parse("22 1 x / / rw - ext4 /dev/vda rw").is_err());
    }

    #[test]
    fn unescapes_octal_only() {
        assert_eq!(unescape("a\\040b\\134c"), "a b\\c");
        assert_eq!(unescape("a\\9b\\04"), "a\\9b\\04");
    }
}
