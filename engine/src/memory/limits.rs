//! The memory limits that apply to this process, each with the room it still leaves:
//!
//! - `ulimit -v` (`RLIMIT_AS`) less the address space in use (`VmSize`), and `RLIMIT_DATA`
//!   less the data segment in use (`VmData`): what the allocator will refuse;
//! - the cgroup v2 `memory.max` less `memory.current`, of the process's cgroup and of every
//!   cgroup above it (found through `/proc/self/cgroup`), or the cgroup v1
//!   `memory.limit_in_bytes` less `memory.usage_in_bytes`: in a container, where `MemTotal` is
//!   the host's, this is the real limit;
//! - `/proc/meminfo`'s `MemAvailable` (of `MemTotal`): what the machine can give without
//!   swapping.
//!
//! Memory already mapped or allocated (the model's weights, mapped or read) is in the usage
//! figures, so the room is what is left for new buffers. Where a source cannot be read (not
//! Linux, no cgroup), it is left out; [`available`] is `None` when none can.

use std::path::{Path, PathBuf};

/// Where a limit comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitSource {
    /// `ulimit -v`: the address-space rlimit.
    AddressSpace,
    /// `ulimit -d`: the data-segment rlimit.
    DataSegment,
    /// A cgroup v2 `memory.max` (the cgroup's directory).
    CgroupV2(PathBuf),
    /// A cgroup v1 `memory.limit_in_bytes` (the cgroup's directory).
    CgroupV1(PathBuf),
    /// `/proc/meminfo`'s `MemAvailable`.
    MemAvailable,
}

impl std::fmt::Display for LimitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitSource::AddressSpace => write!(f, "ulimit -v, RLIMIT_AS"),
            LimitSource::DataSegment => write!(f, "ulimit -d, RLIMIT_DATA"),
            LimitSource::CgroupV2(dir) => write!(f, "cgroup {}/memory.max", dir.display()),
            LimitSource::CgroupV1(dir) => {
                write!(f, "cgroup {}/memory.limit_in_bytes", dir.display())
            }
            LimitSource::MemAvailable => write!(f, "MemAvailable in /proc/meminfo"),
        }
    }
}

/// One limit and the room it leaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryLimit {
    /// Bytes that may still be allocated under this limit.
    pub available: u64,
    /// The limit itself, in bytes.
    pub limit: u64,
    /// Where it comes from.
    pub source: LimitSource,
}

/// The raw readings the limits are computed from (texts as the files hold them), so that the
/// arithmetic can be tested on sample data.
#[derive(Clone, Debug, Default)]
pub struct Readings {
    /// `RLIMIT_AS`'s soft limit (`None`: unlimited or unknown).
    pub rlimit_as: Option<u64>,
    /// `RLIMIT_DATA`'s soft limit (`None`: unlimited or unknown).
    pub rlimit_data: Option<u64>,
    /// `/proc/self/status`.
    pub status: Option<String>,
    /// For the process's cgroup v2 and each one above it: directory, `memory.max`,
    /// `memory.current`.
    pub cgroup_v2: Vec<(PathBuf, String, Option<String>)>,
    /// The cgroup v1 memory controller's directory, `memory.limit_in_bytes`,
    /// `memory.usage_in_bytes`.
    pub cgroup_v1: Option<(PathBuf, String, Option<String>)>,
    /// `/proc/meminfo`.
    pub meminfo: Option<String>,
}

/// The limit that leaves the least room now, if any can be read.
pub fn available() -> Option<MemoryLimit> {
    smallest(limits_from(&Readings::read()))
}

/// The one of `limits` that leaves the least room.
pub fn smallest(limits: Vec<MemoryLimit>) -> Option<MemoryLimit> {
    limits.into_iter().min_by_key(|l| l.available)
}

/// A `Key:   1234 kB` field of `/proc/meminfo` or `/proc/self/status`, in bytes.
pub fn kib_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.split(':').next() == Some(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// A cgroup limit file's value in bytes; `None` for `max` or v1's "unlimited" (a value near
/// `i64::MAX`).
pub fn limit_value(text: &str) -> Option<u64> {
    let v: u64 = text.trim().parse().ok()?;
    (v < 1 << 62).then_some(v)
}

/// The cgroup v2 path in `/proc/self/cgroup` (the `0::/path` line).
pub fn cgroup_v2_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

/// The cgroup v1 memory controller's path in `/proc/self/cgroup` (`N:memory:/path`, the
/// controller possibly listed with others: `N:cpu,memory:/path`).
pub fn cgroup_v1_memory_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    })
}

/// The limits `r` describes, each with its room.
pub fn limits_from(r: &Readings) -> Vec<MemoryLimit> {
    let mut out = Vec::new();
    let status = r.status.as_deref().unwrap_or("");
    let mut rlimit = |limit: Option<u64>, used_key: &str, source: LimitSource| {
        if let Some(limit) = limit {
            let used = kib_field(status, used_key).unwrap_or(0);
            out.push(MemoryLimit {
                available: limit.saturating_sub(used),
                limit,
                source,
            });
        }
    };
    rlimit(r.rlimit_as, "VmSize", LimitSource::AddressSpace);
    rlimit(r.rlimit_data, "VmData", LimitSource::DataSegment);
    let mut cgroup = |dir: &Path, max: &str, current: &Option<String>, v2: bool| {
        if let Some(limit) = limit_value(max) {
            let used = current.as_deref().and_then(limit_value).unwrap_or(0);
            let dir = dir.to_path_buf();
            out.push(MemoryLimit {
                available: limit.saturating_sub(used),
                limit,
                source: if v2 {
                    LimitSource::CgroupV2(dir)
                } else {
                    LimitSource::CgroupV1(dir)
                },
            });
        }
    };
    for (dir, max, current) in &r.cgroup_v2 {
        cgroup(dir, max, current, true);
    }
    if let Some((dir, max, current)) = &r.cgroup_v1 {
        cgroup(dir, max, current, false);
    }
    if let Some(info) = &r.meminfo
        && let Some(total) = kib_field(info, "MemTotal")
    {
        out.push(MemoryLimit {
            available: kib_field(info, "MemAvailable").unwrap_or(total),
            limit: total,
            source: LimitSource::MemAvailable,
        });
    }
    out
}

impl Readings {
    /// Read this process's limits from the system.
    pub fn read() -> Readings {
        let text = |p: &Path| std::fs::read_to_string(p).ok();
        let proc_cgroup = text(Path::new("/proc/self/cgroup")).unwrap_or_default();
        let mut cgroup_v2 = Vec::new();
        if let Some(path) = cgroup_v2_path(&proc_cgroup) {
            // Unified hierarchy at /sys/fs/cgroup, or beside v1 at /sys/fs/cgroup/unified.
            for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
                let mut dir = Path::new(root).join(path.trim_start_matches('/'));
                while dir.starts_with(root) {
                    if let Some(max) = text(&dir.join("memory.max")) {
                        cgroup_v2.push((dir.clone(), max, text(&dir.join("memory.current"))));
                    }
                    if !dir.pop() {
                        break;
                    }
                }
            }
        }
        let cgroup_v1 = cgroup_v1_memory_path(&proc_cgroup).and_then(|path| {
            let root = Path::new("/sys/fs/cgroup/memory");
            // Inside a container the path may name the host's hierarchy: then the
            // controller's root is the container's own cgroup.
            [root.join(path.trim_start_matches('/')), root.to_path_buf()]
                .into_iter()
                .find_map(|dir| {
                    let max = text(&dir.join("memory.limit_in_bytes"))?;
                    let used = text(&dir.join("memory.usage_in_bytes"));
                    Some((dir, max, used))
                })
        });
        Readings {
            rlimit_as: rlimit::soft_limit(rlimit::Kind::AddressSpace),
            rlimit_data: rlimit::soft_limit(rlimit::Kind::Data),
            status: text(Path::new("/proc/self/status")),
            cgroup_v2,
            cgroup_v1,
            meminfo: text(Path::new("/proc/meminfo")),
        }
    }
}

/// The process's resource limits.
mod rlimit {
    /// Which limit.
    pub enum Kind {
        AddressSpace,
        Data,
    }

    /// The soft limit, `None` when unlimited or unknown.
    #[cfg(unix)]
    pub fn soft_limit(kind: Kind) -> Option<u64> {
        let resource = match kind {
            Kind::AddressSpace => libc::RLIMIT_AS,
            Kind::Data => libc::RLIMIT_DATA,
        };
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `lim` is a valid, writable `rlimit` for the call's duration, and `resource`
        // is one of the constants getrlimit takes.
        let rc = unsafe { libc::getrlimit(resource, &mut lim) };
        // `rlim_t` is narrower than u64 on some targets.
        #[allow(clippy::unnecessary_cast)]
        let cur = lim.rlim_cur as u64;
        (rc == 0 && lim.rlim_cur != libc::RLIM_INFINITY).then_some(cur)
    }

    /// No rlimits outside Unix.
    #[cfg(not(unix))]
    pub fn soft_limit(_kind: Kind) -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:       65842260 kB\nMemFree:         1234567 kB\n\
                           MemAvailable:   24536440 kB\nBuffers:          123456 kB\n";
    const STATUS: &str = "Name:\ttessera\nVmPeak:\t  300000 kB\nVmSize:\t  262144 kB\n\
                          VmData:\t  131072 kB\n";

    #[test]
    fn fields_and_values_parse() {
        assert_eq!(kib_field(MEMINFO, "MemTotal"), Some(65842260 * 1024));
        assert_eq!(kib_field(MEMINFO, "MemAvailable"), Some(24536440 * 1024));
        assert_eq!(kib_field(MEMINFO, "Mem"), None);
        assert_eq!(kib_field(STATUS, "VmSize"), Some(256 << 20));
        assert_eq!(limit_value("max\n"), None);
        assert_eq!(limit_value("9223372036854771712\n"), None);
        assert_eq!(limit_value("8589934592\n"), Some(8 << 30));
        assert_eq!(limit_value("garbage"), None);
    }

    #[test]
    fn cgroup_paths_are_found() {
        let hybrid = "9:name=systemd:/\n4:memory:/docker/abc\n1:cpu,cpuacct:/\n0::/user.slice\n";
        assert_eq!(cgroup_v2_path(hybrid), Some("/user.slice"));
        assert_eq!(cgroup_v1_memory_path(hybrid), Some("/docker/abc"));
        assert_eq!(cgroup_v1_memory_path("3:cpu,memory:/x\n"), Some("/x"));
        assert_eq!(cgroup_v1_memory_path("0::/only-v2\n"), None);
        assert_eq!(cgroup_v2_path("4:memory:/docker/abc\n"), None);
    }

    #[test]
    fn the_smallest_room_wins_and_usage_is_subtracted() {
        let r = Readings {
            rlimit_as: Some(8_000_000 * 1024),
            rlimit_data: None,
            status: Some(STATUS.into()),
            cgroup_v2: vec![
                (
                    "/sys/fs/cgroup/a/b".into(),
                    "max\n".into(),
                    Some("1000\n".into()),
                ),
                (
                    "/sys/fs/cgroup/a".into(),
                    "4294967296\n".into(),
                    Some("1073741824\n".into()),
                ),
            ],
            cgroup_v1: Some((
                "/sys/fs/cgroup/memory".into(),
                "9223372036854771712".into(),
                None,
            )),
            meminfo: Some(MEMINFO.into()),
        };
        let all = limits_from(&r);
        assert_eq!(all.len(), 3, "{all:?}");
        assert_eq!(all[0].available, 8_000_000 * 1024 - (256 << 20));
        assert_eq!(all[0].source, LimitSource::AddressSpace);
        let least = smallest(all).unwrap();
        assert_eq!(least.available, 3 << 30);
        assert_eq!(least.limit, 4 << 30);
        assert_eq!(
            least.source.to_string(),
            "cgroup /sys/fs/cgroup/a/memory.max"
        );
    }

    #[test]
    fn meminfo_alone_gives_mem_available() {
        let r = Readings {
            meminfo: Some(MEMINFO.into()),
            ..Readings::default()
        };
        let l = smallest(limits_from(&r)).unwrap();
        assert_eq!(l.source, LimitSource::MemAvailable);
        assert_eq!(l.available, 24536440 * 1024);
        assert!(smallest(limits_from(&Readings::default())).is_none());
    }

    #[test]
    fn this_process_has_some_limit_on_linux() {
        if cfg!(target_os = "linux") {
            let l = available().expect("/proc/meminfo at least");
            assert!(l.available > 0 && l.available <= l.limit, "{l:?}");
        }
    }
}
