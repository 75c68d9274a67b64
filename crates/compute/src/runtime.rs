//! The sandbox a job runs in: a WASI preview 1 module in wasmtime, with a CPU budget (fuel), a
//! memory ceiling, a wall deadline (epoch interruption), no network, and no filesystem but its
//! inputs (read-only, at `/in`) and its output directory (at `/out`). Its stdout and stderr go
//! to files, readable while it runs.
//!
//! One [`Runtime`] per node: one engine (instances come from the pooling allocator), compiled
//! modules cached by the BLAKE3 of their bytes, and one thread that ticks the epoch.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Linker, Module, PoolingAllocationConfig,
    ResourceLimiter, Store, Trap,
};
use wasmtime_wasi::p1::{self, WasiP1Ctx};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

/// How often the epoch ticks: the resolution of deadlines.
const TICK: Duration = Duration::from_millis(10);
/// Compiled modules kept.
const CACHED_MODULES: usize = 64;
/// The most memory any one job may be given.
pub const MAX_MEMORY: u64 = 4 << 30;
/// The largest module a node compiles: compiling happens before any of a job's limits apply.
pub const MAX_MODULE_BYTES: usize = 64 << 20;
/// The most a run may write: its `/out` folder, stdout and stderr together. Checked every
/// [`OUTPUT_CHECK`] while it runs, so a run may overshoot by what it writes meanwhile.
pub const MAX_OUTPUT_BYTES: u64 = 4 << 30;
/// How often a run's output is measured.
const OUTPUT_CHECK: Duration = Duration::from_millis(50);
/// Jobs a node runs at once (pool slots).
pub const MAX_CONCURRENT: u32 = 32;

/// A job's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Fuel: roughly one unit per WebAssembly instruction.
    pub fuel: u64,
    /// Linear memory, bytes.
    pub memory: u64,
    /// Wall-clock time from the start of the run.
    pub deadline: Duration,
}

/// How a run sees time and randomness. Every run's floats are canonical (NaN results have one
/// bit pattern) and no run has threads or relaxed SIMD: those are the engine's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// The host's clocks and randomness.
    Native,
    /// Everything from the job: the wall clock stands at `epoch_ms`, the monotonic clock
    /// advances 1 µs at each reading from 0, and randomness (secure and insecure alike) is a
    /// stream seeded by `seed` — the same module and inputs give the same outputs on every
    /// node. Its name, [`DETERMINISTIC_PROFILE`], goes into a run's result commitment.
    Deterministic {
        /// The randomness seed.
        seed: [u8; 32],
        /// Where the wall clock stands, Unix ms.
        epoch_ms: u64,
    },
}

/// The deterministic profile's name and version (a change to what it fixes is a new version).
pub const DETERMINISTIC_PROFILE: &str = "weft-det/1";

/// A wall clock that stands still.
struct FixedClock(Duration);

impl wasmtime_wasi::HostWallClock for FixedClock {
    fn resolution(&self) -> Duration {
        Duration::from_micros(1)
    }

    fn now(&self) -> Duration {
        self.0
    }
}

/// A monotonic clock that advances 1 µs per reading.
struct TickingClock(std::sync::atomic::AtomicU64);

impl wasmtime_wasi::HostMonotonicClock for TickingClock {
    fn resolution(&self) -> u64 {
        1_000
    }

    fn now(&self) -> u64 {
        self.0.fetch_add(1_000, Ordering::Relaxed)
    }
}

/// What a run is given.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// argv\[1..\] (argv\[0\] is the job's name).
    pub args: Vec<String>,
    /// Environment.
    pub env: Vec<(String, String)>,
    /// Host directory mounted read-only at `/in` (None: no inputs).
    pub inputs: Option<PathBuf>,
    /// Host directory mounted read-write at `/out`.
    pub output: PathBuf,
    /// Where stdout goes.
    pub stdout: PathBuf,
    /// Where stderr goes.
    pub stderr: PathBuf,
    /// Limits.
    pub limits: Limits,
    /// Clocks and randomness.
    pub profile: Profile,
    /// Set to stop the run (its lease was lost, or the job was cancelled): checked at every
    /// epoch tick, so the run ends within about 10 ms with [`RunError::Cancelled`].
    pub cancel: Option<Arc<AtomicBool>>,
}

/// A run that finished (the module exited, with any code).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The exit code (0 when `_start` returned).
    pub exit_code: i32,
    /// Fuel consumed.
    pub fuel_used: u64,
    /// Wall time of the run (not counting compilation).
    pub wall: Duration,
}

/// Why a run did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Not a WASI command module, or it does not compile or link.
    #[error("the module is not a runnable WASI (preview 1) command: {0}")]
    BadModule(String),
    /// Limits outside what this node allows.
    #[error("{0}")]
    BadLimits(String),
    /// The CPU budget ran out.
    #[error("the job used all of its {limit} units of fuel (raise `fuel` in the spec, or --fuel)")]
    OutOfFuel {
        /// The budget.
        limit: u64,
    },
    /// It asked for more memory than it may have.
    #[error(
        "the job needed more than its {limit} bytes of memory (raise `memory` in the spec, or --memory)"
    )]
    OutOfMemory {
        /// The ceiling.
        limit: u64,
    },
    /// The wall deadline passed.
    #[error("the job ran past its deadline of {0:?}")]
    Deadline(Duration),
    /// Stopped from outside (the job was cancelled, or its runner lost the lease).
    #[error("the run was stopped: its job was cancelled or its runner lost its lease")]
    Cancelled,
    /// It wrote more than a run may (`/out`, stdout and stderr together).
    #[error(
        "the job wrote more than the {limit} bytes a run may write (/out, stdout and stderr together)"
    )]
    OutputQuota {
        /// The quota.
        limit: u64,
    },
    /// It trapped (a bug in the module).
    #[error("the job trapped: {0}")]
    Trap(String),
    /// Its files could not be set up.
    #[error("job files: {0}")]
    Io(#[from] std::io::Error),
}

/// The memory ceiling of one store; remembers that it was hit.
struct JobLimiter {
    memory: usize,
    hit: bool,
}

impl ResourceLimiter for JobLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

struct JobState {
    wasi: WasiP1Ctx,
    limiter: JobLimiter,
}

/// A node's WebAssembly runtime.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
    output_quota: u64,
}

struct Inner {
    engine: Engine,
    linker: Linker<JobState>,
    modules: Mutex<HashMap<[u8; 32], Module>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// A runtime; starts its epoch thread.
    pub fn new() -> Result<Runtime, RunError> {
        Runtime::build(true)
    }

    /// A runtime whose float results are the CPU's own (NaN bit patterns as the hardware makes
    /// them): only to measure what canonical floats cost (`weft bench ledger`); jobs never run
    /// on it.
    pub fn with_native_floats() -> Result<Runtime, RunError> {
        Runtime::build(false)
    }

    fn build(canonical_floats: bool) -> Result<Runtime, RunError> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(MAX_CONCURRENT)
            .total_memories(MAX_CONCURRENT)
            .total_tables(MAX_CONCURRENT)
            .total_stacks(MAX_CONCURRENT)
            .max_memory_size(MAX_MEMORY as usize);
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            // Deterministic floating point, for results that may be checked by rerunning.
            .cranelift_nan_canonicalization(canonical_floats)
            .wasm_relaxed_simd(false)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| RunError::BadModule(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        p1::add_to_linker_async(&mut linker, |s: &mut JobState| &mut s.wasi)
            .map_err(|e| RunError::BadModule(e.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = engine.weak();
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("weft-epoch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    match ticker.upgrade() {
                        Some(e) => e.increment_epoch(),
                        None => return,
                    }
                }
            })?;
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                linker,
                modules: Mutex::new(HashMap::new()),
                stop,
            }),
            output_quota: MAX_OUTPUT_BYTES,
        })
    }

    /// The same runtime, its runs allowed to write at most `bytes` (default
    /// [`MAX_OUTPUT_BYTES`]).
    pub fn with_output_quota(mut self, bytes: u64) -> Runtime {
        self.output_quota = bytes;
        self
    }

    /// The compiled module of `bytes` (WebAssembly binary or text), from the cache if it was
    /// compiled before.
    pub fn module(&self, bytes: &[u8]) -> Result<Module, RunError> {
        if bytes.len() > MAX_MODULE_BYTES {
            return Err(RunError::BadModule(format!(
                "{} bytes, more than a module may be ({MAX_MODULE_BYTES})",
                bytes.len()
            )));
        }
        let hash = *blake3::hash(bytes).as_bytes();
        if let Some(m) = self.inner.modules.lock().get(&hash) {
            return Ok(m.clone());
        }
        let module = Module::new(&self.inner.engine, bytes)
            .map_err(|e| RunError::BadModule(format!("{e:#}")))?;
        let mut modules = self.inner.modules.lock();
        if modules.len() >= CACHED_MODULES {
            modules.clear();
        }
        modules.insert(hash, module.clone());
        Ok(module)
    }

    /// Whether `bytes` are compiled and cached.
    pub fn is_cached(&self, bytes: &[u8]) -> bool {
        self.inner
            .modules
            .lock()
            .contains_key(blake3::hash(bytes).as_bytes())
    }

    /// Run `module` as a WASI command under `spec`. Blocks the calling thread (run it on a
    /// blocking thread, not inside an async runtime's worker): the module runs to its end, its
    /// limits, or its deadline — which holds in host calls too.
    pub fn run(&self, name: &str, module: &Module, spec: &RunSpec) -> Result<Outcome, RunError> {
        let limits = spec.limits;
        if limits.memory > MAX_MEMORY {
            return Err(RunError::BadLimits(format!(
                "memory {} bytes is more than a job may have ({MAX_MEMORY})",
                limits.memory
            )));
        }
        let mut wasi = WasiCtxBuilder::new();
        let mut argv = vec![name.to_string()];
        argv.extend(spec.args.iter().cloned());
        wasi.args(&argv)
            .envs(&spec.env)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(output_file(&spec.stdout)?)
            .stderr(output_file(&spec.stderr)?);
        if let Profile::Deterministic { seed, epoch_ms } = spec.profile {
            use rand::SeedableRng as _;
            let mut insecure = seed;
            insecure[0] ^= 1;
            wasi.wall_clock(FixedClock(Duration::from_millis(epoch_ms)))
                .monotonic_clock(TickingClock(std::sync::atomic::AtomicU64::new(0)))
                .secure_random(rand::rngs::StdRng::from_seed(seed))
                .insecure_random(rand::rngs::StdRng::from_seed(insecure))
                .insecure_random_seed(u128::from_le_bytes(
                    seed[..16].try_into().unwrap_or_default(),
                ));
        }
        if let Some(inputs) = &spec.inputs {
            wasi.preopened_dir(inputs, "/in", FsPerms::ReadOnly)
                .map_err(|e| RunError::Io(std::io::Error::other(format!("{e:#}"))))?;
        }
        std::fs::create_dir_all(&spec.output)?;
        wasi.preopened_dir(&spec.output, "/out", FsPerms::ReadWrite)
            .map_err(|e| RunError::Io(std::io::Error::other(format!("{e:#}"))))?;
        let state = JobState {
            wasi: wasi.build_p1(),
            limiter: JobLimiter {
                memory: limits.memory as usize,
                hit: false,
            },
        };
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        store
            .set_fuel(limits.fuel)
            .map_err(|e| RunError::BadModule(e.to_string()))?;
        let ticks = limits
            .deadline
            .as_millis()
            .div_ceil(TICK.as_millis())
            .max(1) as u64;
        // One tick at a time, so a cancellation is seen within a tick; the deadline is the
        // count of ticks.
        store.set_epoch_deadline(1);
        let cancel = spec.cancel.clone();
        let mut left = ticks;
        store.epoch_deadline_callback(move |_| {
            if cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(wasmtime::Error::new(Stopped));
            }
            left = left.saturating_sub(1);
            if left == 0 {
                return Err(wasmtime::Error::new(Trap::Interrupt));
            }
            Ok(wasmtime::UpdateDeadline::Yield(1))
        });
        let start = Instant::now();
        // The run is a future on a runtime of its own (this is a blocking thread): the module's
        // code is stopped by the epoch callback above, and a host call it waits in (a sleep, a
        // read) by dropping the future when the deadline passes or the job is cancelled.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let linker = &self.inner.linker;
        let cancel = spec.cancel.clone();
        let output_quota = self.output_quota;
        let result = runtime.block_on(async {
            let run = async {
                let instance = linker.instantiate_async(&mut store, module).await?;
                let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                start.call_async(&mut store, ()).await
            };
            let stopped = async {
                let mut measured = Instant::now();
                loop {
                    tokio::time::sleep(TICK).await;
                    if cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
                        return wasmtime::Error::new(Stopped);
                    }
                    if start.elapsed() >= limits.deadline + TICK * 2 {
                        return wasmtime::Error::new(Trap::Interrupt);
                    }
                    if measured.elapsed() >= OUTPUT_CHECK {
                        measured = Instant::now();
                        if output_bytes(spec, output_quota) > output_quota {
                            return wasmtime::Error::new(OverQuota);
                        }
                    }
                }
            };
            tokio::select! {
                r = run => r,
                e = stopped => Err(e),
            }
        });
        drop(runtime);
        let wall = start.elapsed();
        let fuel_used = limits.fuel - store.get_fuel().unwrap_or(0);
        let exit_code = match result {
            Ok(()) => 0,
            Err(e) => {
                if let Some(exit) = e.downcast_ref::<I32Exit>() {
                    exit.0
                } else if e.downcast_ref::<Stopped>().is_some() {
                    return Err(RunError::Cancelled);
                } else if e.downcast_ref::<OverQuota>().is_some() {
                    return Err(RunError::OutputQuota {
                        limit: output_quota,
                    });
                } else if store.data().limiter.hit {
                    return Err(RunError::OutOfMemory {
                        limit: limits.memory,
                    });
                } else {
                    return Err(match e.downcast_ref::<Trap>() {
                        Some(Trap::OutOfFuel) => RunError::OutOfFuel { limit: limits.fuel },
                        Some(Trap::Interrupt) => RunError::Deadline(limits.deadline),
                        Some(t) => RunError::Trap(t.to_string()),
                        None if wall >= limits.deadline => RunError::Deadline(limits.deadline),
                        None => RunError::BadModule(format!("{e:#}")),
                    });
                }
            }
        };
        Ok(Outcome {
            exit_code,
            fuel_used,
            wall,
        })
    }
}

/// Bytes a run has written — its output folder (files, not following links) and its stdout
/// and stderr files — counted no further than just past `limit`.
fn output_bytes(spec: &RunSpec, limit: u64) -> u64 {
    let size = |p: &Path| std::fs::symlink_metadata(p).map_or(0, |m| m.len());
    let mut total = size(&spec.stdout) + size(&spec.stderr);
    let mut dirs = vec![spec.output.clone()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => dirs.push(entry.path()),
                Ok(_) => total += entry.metadata().map_or(0, |m| m.len()),
                Err(_) => {}
            }
            if total > limit {
                return total;
            }
        }
    }
    total
}

/// The error a run that wrote past its quota is ended with.
#[derive(Debug)]
struct OverQuota;

impl std::fmt::Display for OverQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "over its output quota")
    }
}

impl std::error::Error for OverQuota {}

/// The error a cancelled run's epoch callback ends it with.
#[derive(Debug)]
struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stopped")
    }
}

impl std::error::Error for Stopped {}

fn output_file(path: &Path) -> Result<wasmtime_wasi::cli::OutputFile, RunError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    Ok(wasmtime_wasi::cli::OutputFile::new(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOP: &str = r#"(module
        (memory (export "memory") 1)
        (func (export "_start") (loop $l (br $l))))"#;

    const GROW: &str = r#"(module
        (memory (export "memory") 1)
        (func (export "_start")
            (if (i32.eq (memory.grow (i32.const 4096)) (i32.const -1)) (then unreachable))))"#;

    const HELLO: &str = r#"(module
        (import "wasi_snapshot_preview1" "fd_write"
            (func $fd_write (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1)
        (data (i32.const 16) "hello\n")
        (func (export "_start")
            (i32.store (i32.const 0) (i32.const 16))
            (i32.store (i32.const 4) (i32.const 6))
            (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
            (call $exit (i32.const 3))))"#;

    fn spec(dir: &Path, limits: Limits) -> RunSpec {
        RunSpec {
            args: vec![],
            env: vec![],
            inputs: None,
            output: dir.join("out"),
            stdout: dir.join("stdout"),
            stderr: dir.join("stderr"),
            limits,
            profile: Profile::Native,
            cancel: None,
        }
    }

    fn limits() -> Limits {
        Limits {
            fuel: 10_000_000,
            memory: 16 << 20,
            deadline: Duration::from_secs(10),
        }
    }

    #[test]
    fn a_module_runs_writes_stdout_and_exits_with_its_code() {
        let rt = Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let m = rt.module(HELLO.as_bytes()).unwrap();
        assert!(rt.is_cached(HELLO.as_bytes()));
        let out = rt.run("hello", &m, &spec(dir.path(), limits())).unwrap();
        assert_eq!(out.exit_code, 3);
        assert!(out.fuel_used > 0);
        assert_eq!(
            std::fs::read(dir.path().join("stdout")).unwrap(),
            b"hello\n"
        );
    }

    #[test]
    fn limits_end_jobs_with_their_reason() {
        let rt = Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let spin = rt.module(LOOP.as_bytes()).unwrap();
        let fuel = rt.run("spin", &spin, &spec(dir.path(), limits()));
        assert!(
            matches!(fuel, Err(RunError::OutOfFuel { limit: 10_000_000 })),
            "{fuel:?}"
        );
        let late = Limits {
            fuel: u64::MAX / 2,
            deadline: Duration::from_millis(200),
            ..limits()
        };
        let t = Instant::now();
        let deadline = rt.run("spin", &spin, &spec(dir.path(), late));
        assert!(
            matches!(deadline, Err(RunError::Deadline(_))),
            "{deadline:?}"
        );
        assert!(t.elapsed() < Duration::from_secs(2));
        let grow = rt.module(GROW.as_bytes()).unwrap();
        let mem = rt.run("grow", &grow, &spec(dir.path(), limits()));
        assert!(matches!(mem, Err(RunError::OutOfMemory { .. })), "{mem:?}");
        assert!(mem.unwrap_err().to_string().contains("memory"));
        let roomy = Limits {
            memory: 512 << 20,
            ..limits()
        };
        assert_eq!(
            rt.run("grow", &grow, &spec(dir.path(), roomy))
                .unwrap()
                .exit_code,
            0
        );
        assert!(matches!(
            rt.module(b"not wasm"),
            Err(RunError::BadModule(_))
        ));
    }

    #[test]
    fn a_cancelled_run_stops_within_ticks() {
        let rt = Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let spin = rt.module(LOOP.as_bytes()).unwrap();
        let cancel = Arc::new(AtomicBool::new(false));
        let mut s = spec(
            dir.path(),
            Limits {
                fuel: u64::MAX / 2,
                ..limits()
            },
        );
        s.cancel = Some(cancel.clone());
        let flag = cancel.clone();
        let setter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            flag.store(true, Ordering::Relaxed);
        });
        let t = Instant::now();
        let r = rt.run("spin", &spin, &s);
        setter.join().unwrap();
        assert!(matches!(r, Err(RunError::Cancelled)), "{r:?}");
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(150) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    /// [untrusted] 10: a module past the size a node compiles is refused before compiling.
    #[test]
    fn oversized_modules_are_refused_before_compiling() {
        let rt = Runtime::new().unwrap();
        let big = vec![0u8; MAX_MODULE_BYTES + 1];
        let r = rt.module(&big);
        assert!(
            matches!(&r, Err(RunError::BadModule(why)) if why.contains("more than a module may be")),
            "{r:?}"
        );
    }

    /// A module that sleeps in a host call (`poll_oneoff`, what `std::thread::sleep` becomes).
    const SLEEP: &str = r#"(module
        (import "wasi_snapshot_preview1" "poll_oneoff"
            (func $poll (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "_start")
            (i32.store8 (i32.const 8) (i32.const 0))
            (i32.store (i32.const 16) (i32.const 1))
            (i64.store (i32.const 24) (i64.const 60000000000))
            (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#;

    /// [untrusted] 10: a job that sleeps for a minute inside a host call still ends at its
    /// deadline, and a cancellation still stops it within ticks: neither waits for the module
    /// to come back to WebAssembly code.
    #[test]
    fn the_deadline_and_cancellation_hold_through_host_calls() {
        let rt = Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let sleep = rt.module(SLEEP.as_bytes()).unwrap();
        let late = Limits {
            deadline: Duration::from_millis(300),
            ..limits()
        };
        let t = Instant::now();
        let r = rt.run("sleep", &sleep, &spec(dir.path(), late));
        assert!(matches!(r, Err(RunError::Deadline(_))), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

        let cancel = Arc::new(AtomicBool::new(false));
        let mut s = spec(dir.path(), limits());
        s.cancel = Some(cancel.clone());
        let setter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            cancel.store(true, Ordering::Relaxed);
        });
        let t = Instant::now();
        let r = rt.run("sleep", &sleep, &s);
        setter.join().unwrap();
        assert!(matches!(r, Err(RunError::Cancelled)), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    /// [untrusted] 10: a job that writes without end is stopped once its output passes the
    /// quota, with an error that says so — the node's disk is not its to fill.
    #[test]
    fn a_run_that_writes_past_its_quota_is_stopped() {
        const FLOOD: &str = r#"(module
            (import "wasi_snapshot_preview1" "fd_write"
                (func $fd_write (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 2)
            (func (export "_start")
                (i32.store (i32.const 0) (i32.const 1024))
                (i32.store (i32.const 4) (i32.const 65536))
                (loop $l
                    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
                    (br $l))))"#;
        let rt = Runtime::new().unwrap().with_output_quota(1 << 20);
        let dir = tempfile::tempdir().unwrap();
        let flood = rt.module(FLOOD.as_bytes()).unwrap();
        let t = Instant::now();
        let r = rt.run(
            "flood",
            &flood,
            &spec(
                dir.path(),
                Limits {
                    fuel: u64::MAX / 2,
                    ..limits()
                },
            ),
        );
        assert!(
            matches!(r, Err(RunError::OutputQuota { limit: 1048576 })),
            "{r:?}"
        );
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }

    /// Floats whose bits hardware leaves open (NaN results), the clocks and randomness: what a
    /// run prints of them.
    const CORPUS: &str = r#"(module
        (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "_start") (local $x f64) (local $i i32)
            (f64.store (i32.const 0) (f64.div (f64.const 0) (f64.const 0)))
            (f64.store (i32.const 8) (f64.sqrt (f64.const -1)))
            (f64.store (i32.const 16) (f64.sub (f64.const inf) (f64.const inf)))
            (f64.store (i32.const 24) (f64.mul (f64.const -nan:0x4000000000001) (f64.const 1)))
            (f64.store (i32.const 32) (f64.min (f64.const nan:0x1) (f64.const 1)))
            (f32.store (i32.const 40) (f32.demote_f64 (f64.mul (f64.const nan:0x4000000000001) (f64.const 2))))
            (f32.store (i32.const 44) (f32.div (f32.const -0) (f32.const 0)))
            ;; a long sum whose rounding is fixed by IEEE 754
            (local.set $x (f64.const 0.1))
            (loop $l
                (local.set $x (f64.add (f64.mul (local.get $x) (f64.const 1.0000001)) (f64.const 0.3)))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br_if $l (i32.lt_u (local.get $i) (i32.const 100000))))
            (f64.store (i32.const 48) (local.get $x))
            (drop (call $random (i32.const 56) (i32.const 16)))
            (drop (call $clock (i32.const 0) (i64.const 1) (i32.const 72)))
            (drop (call $clock (i32.const 1) (i64.const 1) (i32.const 80)))
            (drop (call $clock (i32.const 1) (i64.const 1) (i32.const 88)))
            (i32.store (i32.const 200) (i32.const 0))
            (i32.store (i32.const 204) (i32.const 96))
            (drop (call $fd_write (i32.const 1) (i32.const 200) (i32.const 1) (i32.const 300)))))"#;

    fn corpus(rt: &Runtime, profile: Profile) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let module = rt.module(CORPUS.as_bytes()).unwrap();
        let mut spec = spec(dir.path(), limits());
        spec.profile = profile;
        assert_eq!(rt.run("corpus", &module, &spec).unwrap().exit_code, 0);
        std::fs::read(dir.path().join("stdout")).unwrap()
    }

    fn f64_at(out: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(out[at..at + 8].try_into().unwrap())
    }

    fn f32_at(out: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(out[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn the_deterministic_profile_gives_the_same_bytes_on_every_runtime() {
        let profile = Profile::Deterministic {
            seed: [7; 32],
            epoch_ms: 1_765_000_000_000,
        };
        // Two runtimes stand for two nodes: what a run prints is the same, byte for byte.
        let (a, b) = (Runtime::new().unwrap(), Runtime::new().unwrap());
        let out = corpus(&a, profile);
        assert_eq!(out.len(), 96);
        assert_eq!(out, corpus(&b, profile));
        // Every NaN result is the canonical one, whatever the operands' bits.
        for at in [0, 8, 16, 24, 32] {
            assert_eq!(f64_at(&out, at), 0x7ff8_0000_0000_0000, "f64 at {at}");
        }
        for at in [40, 44] {
            assert_eq!(f32_at(&out, at), 0x7fc0_0000, "f32 at {at}");
        }
        // The wall clock stands at the job's epoch; the monotonic clock ticks per reading.
        assert_eq!(f64_at(&out, 72), 1_765_000_000_000 * 1_000_000);
        assert_eq!(f64_at(&out, 80), 0);
        assert_eq!(f64_at(&out, 88), 1_000);
        // Another seed, other randomness; the host's randomness, other bytes every run.
        let other = corpus(
            &a,
            Profile::Deterministic {
                seed: [8; 32],
                epoch_ms: 1_765_000_000_000,
            },
        );
        assert_ne!(out[56..72], other[56..72]);
        assert_eq!(out[..56], other[..56]);
        let native = corpus(&a, Profile::Native);
        assert_ne!(native[56..72], corpus(&a, Profile::Native)[56..72]);
        assert_eq!(
            native[..56],
            out[..56],
            "floats are canonical in every profile"
        );
    }

    #[test]
    fn without_canonical_floats_nan_bits_are_the_hardware_s() {
        let native = Runtime::with_native_floats().unwrap();
        let profile = Profile::Deterministic {
            seed: [7; 32],
            epoch_ms: 0,
        };
        let out = corpus(&native, profile);
        // A payload carried through a multiplication, or the sign of x86's default NaN: not
        // the canonical bits (what the deterministic rules remove).
        let nans: Vec<u64> = [0, 8, 16, 24, 32]
            .iter()
            .map(|at| f64_at(&out, *at))
            .collect();
        assert!(
            nans.iter().any(|n| *n != 0x7ff8_0000_0000_0000),
            "{nans:x?}"
        );
    }
}
