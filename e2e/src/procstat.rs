//! What a benchmarked process used, from /proc, and where a named binary is: shared by
//! the `bench-*` binaries.
use std::path::PathBuf;

/// One process's /proc figures: VmHWM (peak RSS) and VmRSS in MiB; CPU seconds (user +
/// system) of its own and of its waited-for children.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcStat {
    pub hwm_mib: f64,
    pub rss_mib: f64,
    pub cpu_seconds: f64,
    pub children_cpu_seconds: f64,
}

impl ProcStat {
    /// Its own CPU seconds and its waited-for children's.
    pub fn cpu_with_children(&self) -> f64 {
        self.cpu_seconds + self.children_cpu_seconds
    }
}

/// `None` once the process is gone.
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0.0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command's closing parenthesis, from field 3 (state): utime is field
    // 14, stime 15, cutime 16, cstime 17.
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let seconds = |idx: &[usize]| -> f64 {
        idx.iter()
            .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
            .sum::<f64>()
            / 100.0
    };
    Some(ProcStat {
        hwm_mib: kib("VmHWM:") / 1024.0,
        rss_mib: kib("VmRSS:") / 1024.0,
        cpu_seconds: seconds(&[11, 12]),
        children_cpu_seconds: seconds(&[13, 14]),
    })
}

/// Peak RSS (MiB) and CPU seconds of a process; zeros once it is gone.
pub fn usage(pid: u32) -> (f64, f64) {
    let s = proc_stat(pid).unwrap_or_default();
    (s.hwm_mib, s.cpu_seconds)
}

/// `bin` as given when it is a path, else the first match on PATH.
pub fn which(bin: &str) -> PathBuf {
    if bin.contains('/') {
        return bin.into();
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(bin))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| bin.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_peak_rss_and_cpu_time() {
        // Burn a little CPU so the tick counters move.
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let s = proc_stat(std::process::id()).expect("our own /proc entry");
        assert!(
            s.hwm_mib > 1.0 && s.rss_mib > 1.0 && s.hwm_mib >= s.rss_mib,
            "{s:?}"
        );
        assert!(s.cpu_seconds > 0.0, "{s:?}");
        assert!(proc_stat(u32::MAX).is_none());
    }

    #[test]
    fn which_finds_binaries_on_path() {
        assert_eq!(which("/x/y"), PathBuf::from("/x/y"));
        assert!(which("sh").is_absolute(), "{:?}", which("sh"));
        assert_eq!(
            which("no-such-binary-here"),
            PathBuf::from("no-such-binary-here")
        );
    }
}
