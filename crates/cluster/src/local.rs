//! Local fabrics made by `weft up`: the command a newcomer runs, so tests and benchmarks use
//! the fabric users get.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weft_api::ApiClient;

use crate::process;

/// The flags of `weft up` a fabric is made with (`None`: `weft up`'s default).
#[derive(Clone, Debug, Default)]
pub struct UpOptions {
    /// Number of nodes.
    pub nodes: Option<usize>,
    /// Sites and node counts, `eu:3,us:2`.
    pub sites: Option<String>,
    /// One-way delays between sites, `a-b=DELAY[:JITTER[:LOSS%]],...`.
    pub wan: Option<String>,
    /// Extra loss on every link, `5%`.
    pub loss: Option<String>,
    /// Plain loopback, no WAN emulation.
    pub no_wan: bool,
    /// How long a node may be gone before its shards are rebuilt elsewhere.
    pub repair_grace: Option<String>,
    /// Time between each node's checks of the objects it owns.
    pub repair_interval: Option<String>,
    /// Time between scrubbing passes.
    pub scrub_interval: Option<String>,
    /// Scrubbing rate in MiB/s (0: off).
    pub scrub_mib: Option<u64>,
    /// Requests each node takes per model it serves.
    pub inference_queue: Option<u32>,
    /// Seconds to wait for the fabric to converge (default 60).
    pub timeout: Option<u64>,
}

impl UpOptions {
    /// The command-line flags these options stand for.
    pub fn flags(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut add = |flag: &str, v: Option<String>| {
            if let Some(v) = v {
                out.push(flag.into());
                out.push(v);
            }
        };
        add("--nodes", self.nodes.map(|n| n.to_string()));
        add("--sites", self.sites.clone());
        add("--wan", self.wan.clone());
        add("--loss", self.loss.clone());
        add("--repair-grace", self.repair_grace.clone());
        add("--repair-interval", self.repair_interval.clone());
        add("--scrub-interval", self.scrub_interval.clone());
        add("--scrub-mib", self.scrub_mib.map(|n| n.to_string()));
        add(
            "--inference-queue",
            self.inference_queue.map(|n| n.to_string()),
        );
        add("--timeout", Some(self.timeout.unwrap_or(60).to_string()));
        if self.no_wan {
            out.push("--no-wan".into());
        }
        out
    }
}

/// A fabric of node processes made by `weft up` in a folder; stopped (`weft down`'s way) when
/// dropped.
pub struct LocalFabric {
    exe: PathBuf,
    root: PathBuf,
    /// Set when the fabric made its own folder (removed on drop).
    _tmp: Option<tempfile::TempDir>,
    /// The nodes' data directories, in order (`node1` first).
    pub dirs: Vec<PathBuf>,
    /// Each node's API client, in order.
    pub clients: Vec<ApiClient>,
    /// Node processes this fabric started itself (restarts), reaped when they end.
    children: Vec<Option<Child>>,
}

impl LocalFabric {
    /// Run `weft up` with `options` in `root` (a fresh temporary folder when `None`); returns
    /// once every node sees every other alive, with how long that took.
    pub fn up(options: &UpOptions, root: Option<PathBuf>) -> Result<(LocalFabric, Duration)> {
        let mut args: Vec<String> = options.flags();
        args.push("--quiet".into());
        Self::up_args(&args, root)
    }

    /// Run `weft up --dir ROOT ARGS…` (raw flags, as a user types them).
    pub fn up_args<S: AsRef<str>>(
        args: &[S],
        root: Option<PathBuf>,
    ) -> Result<(LocalFabric, Duration)> {
        let exe = process::binary();
        let (tmp, root) = match root {
            Some(r) => (None, r),
            None => {
                let t = tempfile::tempdir()?;
                let r = t.path().to_path_buf();
                (Some(t), r)
            }
        };
        let started = Instant::now();
        let out = Command::new(&exe)
            .arg("up")
            .arg("--dir")
            .arg(&root)
            .args(args.iter().map(AsRef::as_ref))
            .env_remove("WEFT_DATA")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", exe.display()))?;
        let took = started.elapsed();
        let dirs = process::node_dirs(&root);
        let mut fabric = LocalFabric {
            exe,
            root,
            _tmp: tmp,
            children: dirs.iter().map(|_| None).collect(),
            dirs,
            clients: Vec::new(),
        };
        if !out.status.success() {
            bail!(
                "weft up failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        fabric.clients = fabric
            .dirs
            .iter()
            .map(|d| process::wait_api(d, Duration::from_secs(60)))
            .collect::<Result<_>>()?;
        Ok((fabric, took))
    }

    /// The fabric's folder (`weft down --dir` takes it).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Node `n`'s data directory, counting from 1 as `weft up` names them.
    pub fn node(&self, n: usize) -> PathBuf {
        self.root.join(format!("node{n}"))
    }

    /// The pid of node `i` (from 0), if it runs.
    pub fn pid(&self, i: usize) -> Option<i32> {
        process::running_pid(&self.dirs[i])
    }

    /// Send `sig` to node `i` (from 0) and, if it ends, reap it; its pid.
    pub fn kill(&mut self, i: usize, sig: i32) -> Result<i32> {
        let pid = process::signal(&self.dirs[i], sig)?;
        if sig == libc::SIGKILL
            && let Some(mut c) = self.children[i].take()
        {
            let _ = c.wait();
        }
        Ok(pid)
    }

    /// Start node `i` (from 0) again, without waiting for it.
    pub fn spawn(&mut self, i: usize) -> Result<()> {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.try_wait();
        }
        self.children[i] = Some(process::spawn_node(&self.exe, &self.dirs[i])?);
        Ok(())
    }

    /// Start node `i` (from 0) again and wait for its API.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.spawn(i)?;
        self.clients[i] = process::wait_api(&self.dirs[i], Duration::from_secs(60))?;
        Ok(())
    }
}

impl Drop for LocalFabric {
    fn drop(&mut self) {
        let _ = process::stop_fabric(&self.root);
        for c in self.children.iter_mut().flatten() {
            let _ = c.wait();
        }
    }
}
