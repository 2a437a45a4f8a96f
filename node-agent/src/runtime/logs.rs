//! Container logs in the CRI format, as containerd's `internal/cri/io/logger.go`
//! (`redirectLogs`: one line per `\n`, `\r\n` stripped, lines over the maximum cut into
//! `P` partial lines, trailing text without a newline written as partial) with the
//! kubelet's container log manager rotation (`pkg/kubelet/logs/container_log_manager.go`:
//! rename the live file to `<log>.<YYYYMMDD-hhmmss>`, gzip older rotated files, keep at
//! most `max_files` files including the live one).
//!
//! A line: `2026-11-28T08:00:00.000000000Z stdout F hello` (UTC, nanoseconds, fixed width;
//! kubelet parses it with RFC 3339).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// containerd's default `max_container_log_line_size`.
pub const DEFAULT_MAX_LINE: usize = 16 * 1024;

/// Errors writing a container log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{op} container log {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// CRI's `LogTagPartial` / `LogTagFull`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    Partial,
    Full,
}

impl Tag {
    pub fn as_str(self) -> &'static str {
        match self {
            Tag::Partial => "P",
            Tag::Full => "F",
        }
    }
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn split_time(t: SystemTime) -> (i64, u32, u32, u64, u64, u64, u32) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs() as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400) as u64;
    (
        y,
        mo,
        d,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_nanos(),
    )
}

/// `2026-11-28T08:00:00.000000000Z`: RFC 3339 in UTC with nanoseconds.
pub fn format_timestamp(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, ns) = split_time(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ns:09}Z")
}

/// kubelet's rotated-file suffix, `20261128-080000` (UTC).
pub fn rotation_suffix(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, _) = split_time(t);
    format!("{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}")
}

/// One CRI log line: `<timestamp> <stream> <P|F> <content>\n`.
pub fn format_line(timestamp: &str, stream: Stream, tag: Tag, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(timestamp.len() + content.len() + 12);
    out.extend_from_slice(timestamp.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(tag.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(content);
    out.push(b'\n');
    out
}

/// Splits a byte stream into CRI lines (containerd's `redirectLogs`).
#[derive(Debug)]
pub struct LineSplitter {
    pending: Vec<u8>,
    max_line: usize,
}

impl LineSplitter {
    pub fn new(max_line: usize) -> Self {
        LineSplitter {
            pending: Vec::new(),
            max_line: max_line.max(1),
        }
    }

    /// The complete lines (and over-long chunks) that `data` finishes.
    pub fn feed(&mut self, data: &[u8]) -> Vec<(Tag, Vec<u8>)> {
        let mut out = Vec::new();
        for &b in data {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.pending);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                out.push((Tag::Full, line));
                continue;
            }
            // A line longer than the maximum: its first `max_line` bytes go out as a
            // partial line (a `\r` that may end the line is held back, as containerd's
            // readLine keeps a `\r\n` together).
            if self.pending.len() == self.max_line {
                let held = (self.pending.last() == Some(&b'\r')).then(|| self.pending.pop());
                let chunk = std::mem::take(&mut self.pending);
                out.push((Tag::Partial, chunk));
                if let Some(Some(cr)) = held {
                    self.pending.push(cr);
                }
            }
            self.pending.push(b);
        }
        out
    }

    /// What is left at the end of the stream: text without a final newline, written as
    /// a partial line.
    pub fn finish(&mut self) -> Option<(Tag, Vec<u8>)> {
        if self.pending.is_empty() {
            None
        } else {
            Some((Tag::Partial, std::mem::take(&mut self.pending)))
        }
    }
}

/// A container's log file with size-based rotation.
#[derive(Debug)]
pub struct CriLogWriter {
    path: PathBuf,
    max_size: u64,
    max_files: usize,
    file: File,
    size: u64,
}

impl CriLogWriter {
    /// Opens (appends to) `path`; rotates past `max_size` bytes keeping `max_files` files.
    pub fn open(path: &Path, max_size: u64, max_files: usize) -> Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| LogError::Io {
                op: "create directory of",
                path: path.display().to_string(),
                source,
            })?;
        }
        let file = open_append(path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(CriLogWriter {
            path: path.to_path_buf(),
            max_size,
            max_files: max_files.max(2),
            file,
            size,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one line, rotating first when it would pass the size limit.
    pub fn write_line(
        &mut self,
        stream: Stream,
        tag: Tag,
        content: &[u8],
        now: SystemTime,
    ) -> Result<()> {
        let line = format_line(&format_timestamp(now), stream, tag, content);
        if self.max_size > 0 && self.size > 0 && self.size + line.len() as u64 > self.max_size {
            self.rotate(now)?;
        }
        self.file.write_all(&line).map_err(|source| LogError::Io {
            op: "write",
            path: self.path.display().to_string(),
            source,
        })?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// kubelet's `rotateLog`: drop the oldest rotated files beyond `max_files - 2`,
    /// compress the remaining uncompressed ones, rename the live file to
    /// `<log>.<timestamp>` and start a new one.
    pub fn rotate(&mut self, now: SystemTime) -> Result<()> {
        let io = |op: &'static str, path: &Path| {
            let path = path.display().to_string();
            move |source| LogError::Io { op, path, source }
        };
        let mut rotated = self.rotated_files();
        // Keep max_files - 2: the live file and the one about to be rotated make the rest.
        let keep = self.max_files.saturating_sub(2);
        while rotated.len() > keep {
            let oldest = rotated.remove(0);
            std::fs::remove_file(&oldest).map_err(io("remove rotated", &oldest))?;
        }
        for r in &rotated {
            if r.extension().is_some_and(|e| e == "gz") {
                continue;
            }
            compress(r)?;
        }
        let mut t = now;
        let target = loop {
            let candidate =
                PathBuf::from(format!("{}.{}", self.path.display(), rotation_suffix(t)));
            let gz = PathBuf::from(format!("{}.gz", candidate.display()));
            if !candidate.exists() && !gz.exists() {
                break candidate;
            }
            t += Duration::from_secs(1);
        };
        std::fs::rename(&self.path, &target).map_err(io("rotate", &self.path))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }

    /// `<log>.*` files, oldest first (the suffix is a sortable timestamp).
    pub fn rotated_files(&self) -> Vec<PathBuf> {
        let Some(dir) = self.path.parent() else {
            return Vec::new();
        };
        let prefix = format!(
            "{}.",
            self.path.file_name().unwrap_or_default().to_string_lossy()
        );
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }
}

fn open_append(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| LogError::Io {
            op: "open",
            path: path.display().to_string(),
            source,
        })
}

/// gzip `path` to `path.gz` (through a temporary file) and remove it.
fn compress(path: &Path) -> Result<()> {
    let gz = PathBuf::from(format!("{}.gz", path.display()));
    let tmp = PathBuf::from(format!("{}.tmp", gz.display()));
    let err = |op: &'static str, p: &Path| {
        let p = p.display().to_string();
        move |source| LogError::Io {
            op,
            path: p,
            source,
        }
    };
    let mut input = File::open(path).map_err(err("open", path))?;
    let out = File::create(&tmp).map_err(err("create", &tmp))?;
    let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    std::io::copy(&mut input, &mut enc).map_err(err("compress", path))?;
    enc.finish().map_err(err("compress", path))?;
    std::fs::rename(&tmp, &gz).map_err(err("rename", &tmp))?;
    std::fs::remove_file(path).map_err(err("remove", path))?;
    Ok(())
}

/// Copies one stream of a container into its log, line by line, until end of file.
pub async fn copy_stream<R>(
    mut reader: R,
    stream: Stream,
    writer: Arc<Mutex<CriLogWriter>>,
    max_line: usize,
) where
    R: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut splitter = LineSplitter::new(max_line);
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let lines = splitter.feed(&buf[..n]);
        if lines.is_empty() {
            continue;
        }
        let now = SystemTime::now();
        let mut w = writer.lock().unwrap();
        for (tag, line) in lines {
            if let Err(e) = w.write_line(stream, tag, &line, now) {
                tracing::warn!(error = %e, "container log line dropped");
            }
        }
    }
    if let Some((tag, line)) = splitter.finish() {
        let mut w = writer.lock().unwrap();
        if let Err(e) = w.write_line(stream, tag, &line, SystemTime::now()) {
            tracing::warn!(error = %e, "container log line dropped");
        }
    }
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // table tests: one tuple per case
mod tests {
    use super::*;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn timestamps_table() {
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000000000Z", "19700101-000000"),
            (
                1_795_852_800,
                0,
                "2026-11-28T08:00:00.000000000Z",
                "20261128-080000",
            ),
            (
                951_782_400,
                5,
                "2000-02-29T00:00:00.000000005Z",
                "20000229-000000",
            ),
            (
                4_107_542_399,
                999_999_999,
                "2100-02-28T23:59:59.999999999Z",
                "21000228-235959",
            ),
            (
                1_709_164_800,
                123_456_789,
                "2024-02-29T00:00:00.123456789Z",
                "20240229-000000",
            ),
        ];
        for (secs, nanos, ts, suffix) in cases {
            assert_eq!(format_timestamp(at(secs, nanos)), ts, "{secs}");
            assert_eq!(rotation_suffix(at(secs, nanos)), suffix, "{secs}");
        }
    }

    #[test]
    fn format_line_table() {
        let ts = "2026-11-28T08:00:00.000000000Z";
        let cases: [(Stream, Tag, &[u8], &str); 4] = [
            (
                Stream::Stdout,
                Tag::Full,
                b"hello",
                "2026-11-28T08:00:00.000000000Z stdout F hello\n",
            ),
            (
                Stream::Stderr,
                Tag::Partial,
                b"part",
                "2026-11-28T08:00:00.000000000Z stderr P part\n",
            ),
            (
                Stream::Stdout,
                Tag::Full,
                b"",
                "2026-11-28T08:00:00.000000000Z stdout F \n",
            ),
            (
                Stream::Stdout,
                Tag::Full,
                b"a b\tc",
                "2026-11-28T08:00:00.000000000Z stdout F a b\tc\n",
            ),
        ];
        for (stream, tag, content, expected) in cases {
            assert_eq!(
                String::from_utf8(format_line(ts, stream, tag, content)).unwrap(),
                expected
            );
        }
    }

    fn split(chunks: &[&[u8]], max: usize) -> Vec<(Tag, String)> {
        let mut s = LineSplitter::new(max);
        let mut out: Vec<(Tag, Vec<u8>)> = chunks.iter().flat_map(|c| s.feed(c)).collect();
        out.extend(s.finish());
        out.into_iter()
            .map(|(t, l)| (t, String::from_utf8(l).unwrap()))
            .collect()
    }

    #[test]
    fn line_splitting_table() {
        use Tag::{Full as F, Partial as P};
        let cases: Vec<(&str, Vec<&[u8]>, usize, Vec<(Tag, &str)>)> = vec![
            ("one line", vec![b"hello\n"], 16, vec![(F, "hello")]),
            (
                "two lines in one read",
                vec![b"a\nb\n"],
                16,
                vec![(F, "a"), (F, "b")],
            ),
            (
                "a line across reads",
                vec![b"hel", b"lo\nwo", b"rld\n"],
                16,
                vec![(F, "hello"), (F, "world")],
            ),
            ("crlf stripped", vec![b"dos\r\n"], 16, vec![(F, "dos")]),
            ("a lone cr kept", vec![b"a\rb\n"], 16, vec![(F, "a\rb")]),
            ("empty line", vec![b"\n"], 16, vec![(F, "")]),
            (
                "no final newline is partial",
                vec![b"tail"],
                16,
                vec![(P, "tail")],
            ),
            (
                "exactly the maximum is full",
                vec![b"abcd\n"],
                4,
                vec![(F, "abcd")],
            ),
            (
                "one over the maximum",
                vec![b"abcde\n"],
                4,
                vec![(P, "abcd"), (F, "e")],
            ),
            (
                "long line cut in chunks",
                vec![b"abcdefghij\n"],
                4,
                vec![(P, "abcd"), (P, "efgh"), (F, "ij")],
            ),
            (
                "crlf at the cut stays together",
                vec![b"abc\r\n"],
                4,
                vec![(F, "abc")],
            ),
            (
                "cr at the cut then text",
                vec![b"abc\rdef\n"],
                4,
                vec![(P, "abc"), (F, "\rdef")],
            ),
        ];
        for (name, chunks, max, expected) in cases {
            let expected: Vec<(Tag, String)> = expected
                .into_iter()
                .map(|(t, s)| (t, s.to_string()))
                .collect();
            assert_eq!(split(&chunks, max), expected, "{name}");
        }
    }

    #[test]
    fn rotation_keeps_max_files_and_compresses_older_ones() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("c/0.log");
        // Each line is 30 (timestamp) + 10 + 10 bytes of text = 50 bytes; 120 bytes per file.
        let mut w = CriLogWriter::open(&log, 120, 3).unwrap();
        let mut t = at(1_795_852_800, 0);
        for i in 0..12 {
            w.write_line(
                Stream::Stdout,
                Tag::Full,
                format!("line-{i:04}").as_bytes(),
                t,
            )
            .unwrap();
            t += Duration::from_secs(10);
        }
        let names: Vec<String> = std::fs::read_dir(dir.path().join("c"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        // The live file, the newest rotated file as is, one older file compressed.
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.contains(&"0.log".to_string()));
        assert_eq!(
            names.iter().filter(|n| n.ends_with(".gz")).count(),
            1,
            "{names:?}"
        );
        let live = std::fs::read_to_string(&log).unwrap();
        assert!(live.ends_with("stdout F line-0011\n"), "{live}");
        assert!(live.len() <= 120);
        // The compressed file holds CRI lines.
        let gz = names.iter().find(|n| n.ends_with(".gz")).unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(File::open(dir.path().join("c").join(gz)).unwrap()),
            &mut text,
        )
        .unwrap();
        assert!(text.contains(" stdout F line-"), "{text}");
    }

    #[test]
    fn rotation_in_the_same_second_does_not_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        let mut w = CriLogWriter::open(&log, 1, 5).unwrap();
        let t = at(1_795_852_800, 0);
        for i in 0..3 {
            w.write_line(Stream::Stderr, Tag::Full, format!("{i}").as_bytes(), t)
                .unwrap();
        }
        let rotated = w.rotated_files();
        assert_eq!(rotated.len(), 2, "{rotated:?}");
        assert!(
            rotated[0]
                .to_string_lossy()
                .ends_with("0.log.20261128-080000.gz"),
            "{rotated:?}"
        );
        assert!(
            rotated[1]
                .to_string_lossy()
                .ends_with("0.log.20261128-080001"),
            "{rotated:?}"
        );
    }

    #[tokio::test]
    async fn copy_stream_writes_cri_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        let w = Arc::new(Mutex::new(CriLogWriter::open(&log, 0, 2).unwrap()));
        let input: &[u8] = b"hello\nworld\nno newline";
        copy_stream(input, Stream::Stdout, w.clone(), DEFAULT_MAX_LINE).await;
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().map(|l| &l[31..]).collect();
        assert_eq!(
            lines,
            vec!["stdout F hello", "stdout F world", "stdout P no newline"]
        );
        assert_eq!(
            text.lines().next().unwrap().len(),
            "2026-11-28T08:00:00.000000000Z stdout F hello".len()
        );
    }
}
