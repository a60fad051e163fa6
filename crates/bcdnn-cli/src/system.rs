//! Facts about the machine that the run record and `bcdnn info` report.

use std::time::SystemTime;

use serde::Serialize;

/// The machine a run executes on.
#[derive(Clone, Debug, Serialize)]
pub struct SystemInfo {
    /// The first `model name` line of `/proc/cpuinfo`; `None` where that file is unreadable
    /// or has no such line (outside Linux, or on some ARM kernels).
    pub cpu_model: Option<String>,
    /// Logical cores available to this process (`std::thread::available_parallelism`, which
    /// honours CPU affinity and cgroup quotas on Linux).
    pub logical_cores: usize,
    /// The SIMD instruction set the `f32` elementwise kernels dispatch to, such as
    /// `"x86-v3 (AVX2+FMA)"`.
    pub simd_level: &'static str,
    pub os: &'static str,
    pub arch: &'static str,
}

impl SystemInfo {
    pub fn detect() -> Self {
        SystemInfo {
            cpu_model: cpu_model(),
            logical_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            simd_level: bcdnn_kernels::elementwise::simd::simd_level(),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
        }
    }

    /// Returns the SIMD level for display.
    pub fn simd_level_text(&self) -> &str {
        self.simd_level
    }
}

fn cpu_model() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_string())
    })
}

/// A point in time as UTC RFC 3339 text and as seconds since the Unix epoch.
#[derive(Clone, Debug, Serialize)]
pub struct Timestamp {
    pub rfc3339: String,
    pub unix_seconds: f64,
}

impl Timestamp {
    pub fn now() -> Self {
        let now = SystemTime::now();
        let unix_seconds = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        Timestamp { rfc3339: humantime::format_rfc3339_millis(now).to_string(), unix_seconds }
    }
}
