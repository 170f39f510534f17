//! Server processes: started pinned to one core, measured from /proc, stopped at the end.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::servers::Kind;

/// The core servers run on; the load generator takes the other.
pub(crate) const SERVER_CPU: &str = "0";
pub(crate) const LOAD_CPU: &str = "1";

/// A server process of this binary (`rohrpost-bench serve …`).
pub(crate) struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl ServerProcess {
    pub(crate) fn start(kind: Kind, redis_url: Option<&str>, database_url: Option<&str>) -> Self {
        let exe = std::env::current_exe().expect("own path");
        let kind_name = clap::ValueEnum::to_possible_value(&kind)
            .expect("named kind")
            .get_name()
            .to_owned();
        // A command to run the server under (`ROHRPOST_BENCH_SERVER_PREFIX`, split at
        // whitespace), such as `valgrind --tool=callgrind`: instruction counts are stable
        // where timings are not.
        let prefix = server_prefix();
        let mut program: Vec<std::ffi::OsString> = Vec::new();
        if taskset_available() {
            program.extend(["taskset", "-c", SERVER_CPU].map(Into::into));
        }
        program.extend(prefix.iter().map(Into::into));
        program.push(exe.into_os_string());
        let mut command = Command::new(&program[0]);
        command.args(&program[1..]);
        command.args(["serve", &kind_name, "--addr", "127.0.0.1:0"]);
        if let Some(url) = redis_url {
            command.args(["--redis-url", url]);
        }
        if let Some(url) = database_url {
            command.args(["--database-url", url]);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("server process starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("server reports its address");
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected server output {line:?}"));
        Self { child, addr }
    }

    /// Resident memory, in KiB.
    pub(crate) fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// CPU time used so far (user + system).
    pub(crate) fn cpu_time(&self) -> Duration {
        cpu_time_of(&self.child.id().to_string())
    }

    /// CPU time used so far in user space alone (the rest is the kernel's: the sockets).
    pub(crate) fn user_time(&self) -> Duration {
        ticks_of(&self.child.id().to_string(), &[11])
    }

    /// How often the server's threads went to sleep so far (see [`sleeps_of`]).
    pub(crate) fn sleeps(&self) -> u64 {
        sleeps_of(&self.child.id().to_string())
    }
}

/// How often the load generator's threads went to sleep so far (see [`sleeps_of`]).
pub(crate) fn own_sleeps() -> u64 {
    sleeps_of("self")
}

/// The voluntary context switches of every live thread of `/proc/<pid>`: how often they
/// waited for something (a socket, a lock, work). A process that waits more often for its
/// peer makes that peer wake it more often, which the peer pays for in kernel time.
fn sleeps_of(pid: &str) -> u64 {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    threads
        .filter_map(|thread| std::fs::read_to_string(thread.ok()?.path().join("status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|count| count.trim().parse::<u64>().ok())
        })
        .sum()
}

/// The load generator's own CPU time so far (user + system).
pub(crate) fn own_cpu_time() -> Duration {
    cpu_time_of("self")
}

/// CPU time of the process `/proc/<pid>` names (user + system).
fn cpu_time_of(pid: &str) -> Duration {
    ticks_of(pid, &[11, 12])
}

/// The sum of the given fields of `/proc/<pid>/stat` (counted after the command name), as
/// time.
fn ticks_of(pid: &str, which: &[usize]) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = which
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second())
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Under a prefix, a SIGTERM first, so that a tool such as callgrind writes its
        // counts; then, after at most 30 s, a SIGKILL.
        if !server_prefix().is_empty() {
            // The shell's own `kill`: a slim system may have no kill binary.
            let _ = Command::new("sh")
                .args(["-c", r#"kill -TERM "$0""#, &self.child.id().to_string()])
                .status();
            for _ in 0..300 {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command servers run under, from `ROHRPOST_BENCH_SERVER_PREFIX` (empty when unset).
fn server_prefix() -> Vec<String> {
    std::env::var("ROHRPOST_BENCH_SERVER_PREFIX")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

pub(crate) fn taskset_available() -> bool {
    Command::new("taskset")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Pins this process (the load generator) to the other core.
pub(crate) fn pin_load_generator() {
    if taskset_available() {
        let _ = Command::new("taskset")
            .args(["-p", "-c", LOAD_CPU, &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
    }
}

/// Raises the open-file limit as far as the system allows; returns it.
pub(crate) fn raise_fd_limit(wanted: u64) -> u64 {
    let (_, hard) = rlimit::Resource::NOFILE.get().unwrap_or((1024, 1024));
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    // Root may raise the hard limit up to nr_open; others up to the hard limit.
    for limit in [wanted.min(nr_open), hard] {
        if rlimit::Resource::NOFILE.set(limit, limit.max(hard)).is_ok() {
            return limit;
        }
    }
    rlimit::Resource::NOFILE
        .get()
        .map(|(soft, _)| soft)
        .unwrap_or(1024)
}

/// A `redis-server` on a free port, for the cross-node mode.
pub(crate) struct RedisProcess {
    child: Child,
    pub port: u16,
}

impl RedisProcess {
    pub(crate) fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let mut command = Command::new("taskset");
        command.args(["-c", SERVER_CPU, "redis-server"]);
        if !taskset_available() {
            command = Command::new("redis-server");
        }
        let child = command
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .ok()?;
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Self { child, port });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Runs `redis-cli` against this server; its output.
    fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Empties the server and zeroes its command counts.
    pub(crate) fn reset(&self) {
        self.cli(&["FLUSHALL"]);
        self.reset_counts();
    }

    /// Zeroes the command counts.
    pub(crate) fn reset_counts(&self) {
        self.cli(&["CONFIG", "RESETSTAT"]);
    }

    /// Bytes Redis holds (`INFO memory`, `used_memory`).
    pub(crate) fn used_memory(&self) -> u64 {
        self.cli(&["INFO", "memory"])
            .lines()
            .find_map(|line| line.strip_prefix("used_memory:"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Commands served since the counts were zeroed, by name (`INFO commandstats`).
    pub(crate) fn commands(&self) -> Vec<(String, u64)> {
        self.cli(&["INFO", "commandstats"])
            .lines()
            .filter_map(|line| {
                let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = stats
                    .strip_prefix("calls=")?
                    .split(',')
                    .next()?
                    .parse()
                    .ok()?;
                // RESETSTAT and INFO itself are the bench's own.
                (!matches!(name, "config|resetstat" | "info")).then(|| (name.to_owned(), calls))
            })
            .collect()
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
