//! Node processes of the real binary: what `weft up`, `weft down` and the benchmarks run on.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weft_api::{ApiClient, MemberStatus};
use weft_node::MemberState;

static BINARY: OnceLock<PathBuf> = OnceLock::new();

/// Use `exe` as the `weft` executable from now on (the CLI names itself when it runs a
/// benchmark, whatever its file is called).
pub fn use_binary(exe: PathBuf) {
    let _ = BINARY.set(exe);
}

/// The `weft` executable: the one [`use_binary`] named; else `WEFT_BIN` if set; this process
/// if it is `weft`; else `weft` beside the folder this test binary is in (cargo puts
/// integration tests in `target/<profile>/deps/` and binaries one level up).
pub fn binary() -> PathBuf {
    if let Some(bin) = BINARY.get() {
        return bin.clone();
    }
    if let Some(bin) = std::env::var_os("WEFT_BIN") {
        return PathBuf::from(bin);
    }
    let me = std::env::current_exe().expect("the current executable");
    if me.file_name().is_some_and(|n| n == "weft") {
        return me;
    }
    let dir = me.parent().expect("a folder");
    let up = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("a folder")
    } else {
        dir
    };
    up.join("weft")
}

/// The node directories of a local fabric in `root` (`nodeN/` holding a `fabric.json`), in
/// order of N.
pub fn node_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<(usize, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let n = name.strip_prefix("node")?.parse().ok()?;
            e.path().join("fabric.json").exists().then(|| (n, e.path()))
        })
        .collect();
    dirs.sort();
    dirs.into_iter().map(|(_, p)| p).collect()
}

/// Whether process `pid` is running (neither gone nor a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        !matches!(state, Some("Z" | "X") | None)
    })
}

/// The pid of the node running in `dir`, if it is running.
pub fn running_pid(dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(dir.join("node.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    alive(pid).then_some(pid)
}

/// Send signal `sig` (e.g. `libc::SIGKILL`) to the node running in `dir`; its pid.
pub fn signal(dir: &Path, sig: i32) -> Result<i32> {
    let pid = running_pid(dir).with_context(|| format!("no node running in {}", dir.display()))?;
    // SAFETY: kill(2) with a pid read from the node's own pid file; no memory is involved.
    unsafe { libc::kill(pid, sig) };
    Ok(pid)
}

/// Start `exe --data DIR run` for `dir` in the background, in a process group of its own (so
/// a terminal's ^C does not reach it), logging to `DIR/node.log`; records its pid.
pub fn spawn_node(exe: &Path, dir: &Path) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("node.log"))
        .with_context(|| format!("cannot open {}", dir.join("node.log").display()))?;
    let _ = std::fs::remove_file(dir.join(weft_api::API_ADDR_FILE));
    let child = Command::new(exe)
        .arg("--data")
        .arg(dir)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .env_remove("WEFT_DATA")
        .process_group(0)
        .spawn()
        .context("cannot start a node process")?;
    std::fs::write(dir.join("node.pid"), child.id().to_string())?;
    Ok(child)
}

/// Wait until the node in `dir` answers its API.
pub fn wait_api(dir: &Path, timeout: Duration) -> Result<ApiClient> {
    let start = Instant::now();
    loop {
        if let Ok(c) = ApiClient::for_data_dir(dir)
            && c.get::<serde_json::Value>("/v1/status").is_ok()
        {
            return Ok(c);
        }
        if start.elapsed() > timeout {
            bail!(
                "node in {} did not start within {timeout:?}; see {}",
                dir.display(),
                dir.join("node.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until every node sees every node alive, with its record; returns how long it took.
pub fn wait_converged(dirs: &[PathBuf], timeout: Duration) -> Result<Duration> {
    let start = Instant::now();
    let clients: Vec<ApiClient> = dirs
        .iter()
        .map(|d| wait_api(d, timeout))
        .collect::<Result<_>>()?;
    loop {
        let done = clients.iter().all(|c| {
            c.get::<Vec<MemberStatus>>("/v1/nodes").is_ok_and(|rows| {
                rows.iter()
                    .filter(|m| m.state == MemberState::Alive && m.uptime_secs.is_some())
                    .count()
                    == dirs.len()
            })
        });
        if done {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            bail!("the fabric did not converge within {timeout:?} (see node.log files)");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stop the nodes of the local fabric in `root` (SIGTERM, then SIGKILL after 10 s); returns
/// how many were running.
pub fn stop_fabric(root: &Path) -> Result<usize> {
    let dirs = node_dirs(root);
    let mut pids = Vec::new();
    for dir in &dirs {
        if let Some(pid) = running_pid(dir) {
            // SAFETY: kill(2) with a pid we read from our own pid file; no memory is involved.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            pids.push((dir.clone(), pid));
        }
    }
    // Wait for the processes themselves, not their pid files (a node removes its file as it
    // stops, before its process has exited).
    let deadline = Instant::now() + Duration::from_secs(10);
    for (dir, pid) in &pids {
        while alive(*pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(*pid) {
            // SAFETY: as above.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        let _ = std::fs::remove_file(dir.join("node.pid"));
    }
    Ok(pids.len())
}
