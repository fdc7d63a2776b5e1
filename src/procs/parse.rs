//! Pure parsers for the text of procfs and cgroupfs files (tested on literal strings).

use crate::kfs::parse_u64;

/// The fields of `/proc/<pid>/stat` (or `/proc/<pid>/task/<tid>/stat`) that joulerun uses.
/// Times are in clock ticks (`sysconf(_SC_CLK_TCK)`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PidStat {
    pub pid: i32,
    /// Field 3.
    pub state: u8,
    /// Field 4.
    pub ppid: i32,
    /// Fields 14-17. `cutime`/`cstime` are signed in the kernel's format; clamped to 0.
    pub utime: u64,
    pub stime: u64,
    pub cutime: u64,
    pub cstime: u64,
    /// Field 20.
    pub num_threads: u32,
    /// Field 22: clock ticks after boot. With the pid, it identifies a process across
    /// PID reuse.
    pub starttime: u64,
    /// Field 39: the CPU the task last ran on.
    pub processor: Option<u32>,
    /// Not from `stat`: the process's own CPU time (all its threads, living and
    /// exited) in nanoseconds from its CPU-time clock, read right after `stat` by the
    /// `/proc` tree's reader; `None` when not read (the parser never sets it).
    /// utime + stime above are each truncated to clock ticks, so a process that used
    /// less than a tick shows 0 there; the clock does not.
    pub cpu_ns: Option<u64>,
}

impl PidStat {
    /// Own time plus the time of reaped children.
    pub fn total(&self) -> u64 {
        self.utime + self.stime + self.cutime + self.cstime
    }

    /// Own time only.
    pub fn own(&self) -> u64 {
        self.utime + self.stime
    }
}

/// Signed decimal clamped to `0..`; `None` when not a number.
fn parse_i64_clamped(s: &[u8]) -> Option<u64> {
    match s.first() {
        Some(b'-') => parse_u64(&s[1..]).map(|_| 0),
        _ => parse_u64(s),
    }
}

/// Parse the text of a `stat` file. The command name (field 2) may hold spaces and
/// parentheses, so the fields after it are found from the *last* `)`.
pub fn parse_pid_stat(text: &[u8]) -> Option<PidStat> {
    let open = text.iter().position(|&b| b == b'(')?;
    let close = text.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let pid = parse_u64(text[..open].trim_ascii())?;
    let pid = i32::try_from(pid).ok()?;
    let mut st = PidStat {
        pid,
        ..PidStat::default()
    };
    // Field numbers are 1-based; the first field after ")" is field 3.
    let mut field = 3usize;
    for tok in text[close + 1..]
        .split(|b| b.is_ascii_whitespace())
        .filter(|t| !t.is_empty())
    {
        match field {
            3 => st.state = tok[0],
            4 => st.ppid = i32::try_from(parse_i64_clamped(tok)?).ok()?,
            14 => st.utime = parse_u64(tok)?,
            15 => st.stime = parse_u64(tok)?,
            16 => st.cutime = parse_i64_clamped(tok)?,
            17 => st.cstime = parse_i64_clamped(tok)?,
            20 => st.num_threads = parse_u64(tok)?.min(u32::MAX as u64) as u32,
            22 => st.starttime = parse_u64(tok)?,
            39 => {
                st.processor = parse_u64(tok).and_then(|c| u32::try_from(c).ok());
                break;
            }
            _ => {}
        }
        field += 1;
    }
    // Everything up to starttime is required; `processor` is optional (very old kernels).
    if field < 23 {
        return None;
    }
    Some(st)
}

/// Calls `f(cpu, busy_ticks, idle_ticks)` for every `cpuN` line of `/proc/stat` text.
/// busy = user + nice + system + irq + softirq (guest and guest_nice are already inside
/// user and nice; steal is time the hypervisor gave to someone else);
/// idle = idle + iowait.
pub fn for_each_cpu_line(text: &[u8], mut f: impl FnMut(usize, u64, u64)) {
    for line in text.split(|&b| b == b'\n') {
        let Some(rest) = line.strip_prefix(b"cpu") else {
            continue;
        };
        // "cpu " is the machine total: only "cpuN" lines.
        if !rest.first().is_some_and(u8::is_ascii_digit) {
            continue;
        }
        let mut toks = rest
            .split(|b| b.is_ascii_whitespace())
            .filter(|t| !t.is_empty());
        let Some(cpu) = toks.next().and_then(parse_u64) else {
            // "cpu " (the total line) or junk.
            continue;
        };
        let Ok(cpu) = usize::try_from(cpu) else {
            continue;
        };
        let mut v = [0u64; 7];
        let mut n = 0;
        for (slot, tok) in v.iter_mut().zip(toks) {
            *slot = parse_u64(tok).unwrap_or(0);
            n += 1;
        }
        if n < 4 {
            continue;
        }
        // user nice system idle iowait irq softirq [steal guest guest_nice]
        let busy = v[0] + v[1] + v[2] + v[5] + v[6];
        let idle = v[3] + v[4];
        f(cpu, busy, idle);
    }
}

/// `usage_usec` from the text of a cgroup v2 `cpu.stat`.
pub fn parse_cpu_stat_usage(text: &[u8]) -> Option<u64> {
    for line in text.split(|&b| b == b'\n') {
        if let Some(v) = line.strip_prefix(b"usage_usec ") {
            return parse_u64(v.trim_ascii());
        }
    }
    None
}

/// Calls `f` for every number (one per line or space separated) in `text`: the pids of
/// `cgroup.procs`, the tids of `cgroup.threads`, the pids of a `children` file.
pub fn for_each_number(text: &[u8], mut f: impl FnMut(i32)) {
    for tok in text
        .split(|b| b.is_ascii_whitespace())
        .filter(|t| !t.is_empty())
    {
        if let Some(v) = parse_u64(tok).and_then(|v| i32::try_from(v).ok()) {
            f(v);
        }
    }
}

/// Undo the octal escapes (`\040` for a space) of mountinfo paths.
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first cgroup v2 mount in `/proc/self/mountinfo` text: (root inside the
/// hierarchy, mount point).
pub fn find_cgroup2_mount(mountinfo: &str) -> Option<(String, String)> {
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mut post_f = post.split_ascii_whitespace();
        if post_f.next() != Some("cgroup2") {
            continue;
        }
        let f: Vec<&str> = pre.split_ascii_whitespace().collect();
        if f.len() < 5 {
            continue;
        }
        return Some((unescape_mount_path(f[3]), unescape_mount_path(f[4])));
    }
    None
}

/// The v2 path (`0::/path`) in `/proc/self/cgroup` text.
pub fn find_cgroup2_path(proc_cgroup: &str) -> Option<String> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim_end().to_string())
}

/// The directory of the cgroup at hierarchy path `cg_path`, given the mount's root
/// inside the hierarchy and its mount point. `None` when the cgroup is not below the
/// mount (or the path climbs out with `..`, as it does outside a cgroup namespace).
pub fn cgroup_dir(mount_root: &str, mount_point: &str, cg_path: &str) -> Option<String> {
    if !cg_path.starts_with('/') || cg_path.split('/').any(|c| c == "..") {
        return None;
    }
    let rel = if mount_root == "/" {
        cg_path
    } else {
        let rest = cg_path.strip_prefix(mount_root)?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        rest
    };
    let rel = rel.trim_end_matches('/');
    let mp = mount_point.trim_end_matches('/');
    Some(format!("{mp}{rel}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (a) b (c)) R 17 4242 4242 0 -1 4194560 120 0 0 0 \
        250 31 7 3 20 0 3 0 987654 1000000 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 \
        0 17 1 0 0 0 0 0\n";

    #[test]
    fn stat_with_hostile_comm() {
        let s = parse_pid_stat(STAT.as_bytes()).unwrap();
        assert_eq!(s.pid, 4242);
        assert_eq!(s.state, b'R');
        assert_eq!(s.ppid, 17);
        assert_eq!((s.utime, s.stime, s.cutime, s.cstime), (250, 31, 7, 3));
        assert_eq!(s.num_threads, 3);
        assert_eq!(s.starttime, 987654);
        assert_eq!(s.processor, Some(1));
        assert_eq!(s.total(), 291);
        assert_eq!(s.own(), 281);
    }

    #[test]
    fn stat_edge_cases() {
        // Negative cutime (the kernel prints signed values): clamped.
        let neg = STAT.replace(" 7 3 20", " -5 3 20");
        assert_eq!(parse_pid_stat(neg.as_bytes()).unwrap().cutime, 0);
        // Truncated before starttime: rejected.
        assert_eq!(parse_pid_stat(b"12 (x) S 1 12 12 0 -1 0 0 0 0 0 5 5"), None);
        // Truncated after starttime, before processor: accepted without processor.
        let short = "12 (x) S 1 12 12 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 0 777 0";
        let s = parse_pid_stat(short.as_bytes()).unwrap();
        assert_eq!(
            (s.utime, s.stime, s.starttime, s.processor),
            (5, 6, 777, None)
        );
        // Garbage.
        assert_eq!(parse_pid_stat(b""), None);
        assert_eq!(parse_pid_stat(b")("), None);
        assert_eq!(parse_pid_stat(b"x (y) S z"), None);
        // An empty comm.
        let e = "9 () S 1 9 9 0 -1 0 0 0 0 0 1 2 3 4 20 0 1 0 55 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 5";
        assert_eq!(parse_pid_stat(e.as_bytes()).unwrap().processor, Some(5));
    }

    #[test]
    fn real_self_stat() {
        let text = std::fs::read("/proc/self/stat").unwrap();
        let s = parse_pid_stat(&text).unwrap();
        assert_eq!(s.pid, std::process::id() as i32);
        assert!(s.starttime > 0);
        assert!(s.processor.is_some());
    }

    #[test]
    fn cpu_lines() {
        let text = "cpu  10 10 10 10 10 10 10 10 0 0\n\
                    cpu0 1 2 3 100 5 6 7 1000 0 0\n\
                    cpu3 10 0 0 50 0 0 0\n\
                    cpu7 1 1\n\
                    intr 5 6 7\n\
                    cpuX 1 2 3 4\n";
        let mut got = Vec::new();
        for_each_cpu_line(text.as_bytes(), |c, b, i| got.push((c, b, i)));
        // Steal (1000) excluded from busy; iowait in idle; short line skipped.
        assert_eq!(got, vec![(0, 1 + 2 + 3 + 6 + 7, 105), (3, 10, 50)]);
    }

    #[test]
    fn cpu_stat_usage() {
        let t = "usage_usec 58818180\nuser_usec 41333151\nsystem_usec 17485029\n";
        assert_eq!(parse_cpu_stat_usage(t.as_bytes()), Some(58818180));
        assert_eq!(parse_cpu_stat_usage(b"user_usec 5\n"), None);
    }

    #[test]
    fn numbers() {
        let mut v = Vec::new();
        for_each_number(b"12\n345\n\n6 x 7", |n| v.push(n));
        assert_eq!(v, vec![12, 345, 6, 7]);
    }

    #[test]
    fn mountinfo_and_cgroup() {
        let mi = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                  32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            find_cgroup2_mount(mi),
            Some(("/".into(), "/sys/fs/cgroup/unified".into()))
        );
        let mi2 = "1 2 0:1 /docker/ab /sys/fs/cgroup\\040x rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            find_cgroup2_mount(mi2),
            Some(("/docker/ab".into(), "/sys/fs/cgroup x".into()))
        );
        assert_eq!(find_cgroup2_mount("junk\n"), None);

        let pc = "9:name=systemd:/\n4:memory:/x\n0::/user.slice/u.scope\n";
        assert_eq!(
            find_cgroup2_path(pc).as_deref(),
            Some("/user.slice/u.scope")
        );
        assert_eq!(find_cgroup2_path("1:cpu:/\n"), None);

        assert_eq!(
            cgroup_dir("/", "/sys/fs/cgroup/unified", "/").as_deref(),
            Some("/sys/fs/cgroup/unified")
        );
        assert_eq!(
            cgroup_dir("/", "/sys/fs/cgroup", "/a/b.scope").as_deref(),
            Some("/sys/fs/cgroup/a/b.scope")
        );
        assert_eq!(
            cgroup_dir("/docker/ab", "/sys/fs/cgroup", "/docker/ab/x").as_deref(),
            Some("/sys/fs/cgroup/x")
        );
        assert_eq!(
            cgroup_dir("/docker/ab", "/sys/fs/cgroup", "/docker/abc"),
            None
        );
        assert_eq!(cgroup_dir("/", "/sys/fs/cgroup", "/../../x"), None);
    }
}
