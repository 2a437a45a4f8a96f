//! `/proc/self/mountinfo`, parsed (proc(5)): which paths are mount points, of which
//! device, with which propagation. Pure, so that it is tested on fixed text. The one
//! mountinfo parser of rekube-csi and the node agent.

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
    /// The optional fields: `shared:N`, `master:N`, `propagate_from:N`, `unbindable`
    /// (none: a private mount).
    pub optional_fields: Vec<String>,
    pub fs_type: String,
    pub source: String,
    /// The per-superblock options (`rw,size=1000k`; a cgroup v1 hierarchy's controllers,
    /// an overlay's layers), as the kernel writes them.
    pub super_options: String,
}

impl MountInfo {
    /// Whether this mount is read-only.
    pub fn read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
    }

    /// A member of a peer group (`shared:N`): mounts under it propagate to its peers.
    pub fn is_shared(&self) -> bool {
        self.optional_fields
            .iter()
            .any(|o| o.starts_with("shared:"))
    }

    /// A slave of a peer group (`master:N`): it receives the group's mounts.
    pub fn is_slave(&self) -> bool {
        self.optional_fields
            .iter()
            .any(|o| o.starts_with("master:"))
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
pub fn unescape(field: &str) -> String {
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

/// Parses the whole of a mountinfo file; a malformed line is an error.
pub fn parse(text: &str) -> Result<Vec<MountInfo>, MountInfoError> {
    parse_lines(text).collect()
}

/// Each line of a mountinfo file parsed, in the kernel's order (a mount after the mounts
/// it is on): for a reader that skips what it cannot parse.
pub fn parse_lines(text: &str) -> impl Iterator<Item = Result<MountInfo, MountInfoError>> + '_ {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse_line(i + 1, l))
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
        optional_fields: fields[6..sep].iter().map(|f| f.to_string()).collect(),
        fs_type: fields[sep + 1].to_string(),
        source: unescape(fields[sep + 2]),
        super_options: fields.get(sep + 3).unwrap_or(&"").to_string(),
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
                optional_fields: vec!["shared:50".into()],
                fs_type: "ext4".into(),
                source: "/dev/loop3".into(),
                super_options: "rw".into(),
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
        assert_eq!(mounts[1].super_options, "rw,size=1000k");
    }

    /// The optional fields: shared, slave, both, neither, and propagate_from and
    /// unbindable, which are neither.
    #[test]
    fn optional_fields_say_the_propagation() {
        let mounts = parse(
            "\
1 0 8:1 / / rw shared:1 - ext4 /dev/sda1 rw
2 1 0:50 / /slave rw master:3 - tmpfs tmpfs rw
3 1 0:51 / /both rw shared:12 master:3 propagate_from:1 - tmpfs tmpfs rw
4 1 0:52 / /private rw - tmpfs tmpfs rw
5 1 0:53 / /unbindable rw unbindable - tmpfs tmpfs rw
",
        )
        .unwrap();
        let propagation: Vec<_> = mounts
            .iter()
            .map(|m| (m.is_shared(), m.is_slave()))
            .collect();
        assert_eq!(
            propagation,
            [
                (true, false),
                (false, true),
                (true, true),
                (false, false),
                (false, false)
            ]
        );
        assert_eq!(
            mounts[2].optional_fields,
            ["shared:12", "master:3", "propagate_from:1"]
        );
        assert!(mounts[3].optional_fields.is_empty());
    }

    /// The iterator skips nothing itself: a reader may drop a malformed line and keep
    /// the others.
    #[test]
    fn lines_parse_one_by_one() {
        let text = "1 0 8:1 / / rw - ext4 /dev/sda1 rw\ngarbage\n2 1 0:5 / /a\\040b rw - tmpfs t\n";
        let lines: Vec<_> = parse_lines(text).collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].is_err());
        let ok: Vec<_> = lines.into_iter().flatten().collect();
        assert_eq!(ok[1].mount_point, PathBuf::from("/a b"));
        assert_eq!(ok[1].super_options, "");
        assert!(parse(text).is_err());
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
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/x\\"), "/x\\");
    }
}
