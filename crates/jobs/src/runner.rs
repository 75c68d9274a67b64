//! Running one job on this node, for an account: what a runner does once it holds a lease.
//!
//! Every bucket the job touches is authorized first (its inputs' buckets for reading, its
//! output bucket for writing), before any byte is fetched or any instruction runs. Inputs are
//! streamed from the fabric (verified as every read is) into the job's `in/` directory, under
//! their object keys; the module runs in the [`Runtime`] on a blocking thread; every file it
//! left in `out/` becomes an object under the job's output prefix (so under the output bucket's
//! residency), and so do its stdout and stderr.
//!
//! Where the job runs, and how it is retried, is decided above this (the scheduler and the
//! job's lease, in `weft-compute`).

use futures_util::StreamExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use weft_compute::runtime::{Outcome, Profile, RunError, RunSpec, Runtime};
use weft_compute::spec::{Job, Source};
use weft_data::{Acting, BucketError, Capability, Need, check_key};

use crate::RunnerError;

/// How a run went.
#[derive(Clone, Debug)]
pub struct JobReport {
    /// The module's outcome.
    pub outcome: Outcome,
    /// Input bytes fetched.
    pub input_bytes: u64,
    /// Objects written: key and size (stdout and stderr included).
    pub outputs: Vec<(String, u64)>,
    /// The module's hash.
    pub module: weft_core::ContentHash,
    /// The commitment to the result: the exit code and every output's key, size and hash
    /// (stdout and stderr included), in key order.
    pub result: weft_core::ContentHash,
}

/// The commitment to a run's result: its exit code, its outputs' keys (under the output
/// prefix), sizes and hashes, and the deterministic profile's name when it ran under it (so runs under different rules never
/// look alike).
pub fn result_commitment(
    exit_code: i32,
    outputs: &[(String, u64, [u8; 32])],
    profile: Profile,
) -> weft_core::ContentHash {
    let mut sorted: Vec<&(String, u64, [u8; 32])> = outputs.iter().collect();
    sorted.sort();
    let rules = match profile {
        Profile::Native => "",
        Profile::Deterministic { .. } => weft_compute::runtime::DETERMINISTIC_PROFILE,
    };
    weft_core::ContentHash::of(&weft_core::wire::encode(&(exit_code, sorted, rules)))
}

/// The deterministic profile of job `reference` submitted at `submitted_ms`: its randomness
/// seeded by its reference alone, so every run of the job — on any node, any attempt — sees
/// the same.
pub fn deterministic_profile(reference: &str, submitted_ms: u64) -> Profile {
    let mut h = blake3::Hasher::new_derive_key("weft deterministic job seed v1");
    h.update(reference.as_bytes());
    Profile::Deterministic {
        seed: *h.finalize().as_bytes(),
        epoch_ms: submitted_ms,
    }
}

/// The BLAKE3 hash of a file's bytes.
fn file_hash(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::fs::File::open(path)?)?;
    Ok(*hasher.finalize().as_bytes())
}

/// The relative path an object key is mounted at, refusing anything that could leave `in/`.
fn mount_path(key: &str) -> Option<PathBuf> {
    let path = Path::new(key);
    let ok = !key.is_empty()
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
        && path.components().all(|c| matches!(c, Component::Normal(_)));
    ok.then(|| path.to_path_buf())
}

/// Every file under `dir`, as paths relative to it, in order.
fn files_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(dir.join(&rel))? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let child = rel.join(entry.file_name());
            if kind.is_dir() {
                stack.push(child);
            } else if kind.is_file() {
                out.push(child);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Inputs fetched, and outputs written, at once.
const AT_ONCE: usize = 4;

/// What a lying runner does to a run's outputs before it writes and signs them: the rogue test
/// kit's (`weft_cluster::Rogue`), never set by an honest node.
pub type Tamper = Arc<dyn Fn(&Path) + Send + Sync>;

/// Run `job` here for the account `acting` acts as, in `workdir` (which it may fill; the
/// caller removes it); setting `cancel` stops it (see [`RunSpec::cancel`]).
pub async fn run_job(
    acting: &Acting,
    runtime: &Runtime,
    job: &Job,
    profile: Profile,
    cancel: Option<Arc<AtomicBool>>,
    workdir: &Path,
) -> Result<JobReport, RunnerError> {
    run_job_with(acting, runtime, job, profile, cancel, workdir, None).await
}

/// [`run_job`], with the outputs passed through `tamper` first (the rogue kit's).
pub(crate) async fn run_job_with(
    acting: &Acting,
    runtime: &Runtime,
    job: &Job,
    profile: Profile,
    cancel: Option<Arc<AtomicBool>>,
    workdir: &Path,
    tamper: Option<Tamper>,
) -> Result<JobReport, RunnerError> {
    // Authorize everything before fetching a byte or running an instruction.
    check_key(&format!("{}x", job.output_prefix))?;
    acting.authorize(&job.output_bucket, Need::Write).await?;
    let mut mounts: Vec<(PathBuf, &Source)> = Vec::with_capacity(job.inputs.len());
    for (i, input) in job.inputs.iter().enumerate() {
        let name = match input {
            Source::Object { bucket, key } => {
                acting.authorize(bucket, Need::Read).await?;
                key.clone()
            }
            // Named by place: a capability's key says nothing a job could use as a path.
            Source::Capability(_) => format!("cap{i}"),
            Source::File(f) => return Err(RunnerError::BadInputKey(f.clone())),
        };
        let path = mount_path(&name).ok_or(RunnerError::BadInputKey(name))?;
        mounts.push((path, input));
    }
    if let Source::Object { bucket, .. } = &job.module {
        acting.authorize(bucket, Need::Read).await?;
    }
    // Fetched no further than the sandbox would compile: a peer's object may be any size.
    let mut module = Capped {
        bytes: Vec::new(),
        cap: weft_compute::runtime::MAX_MODULE_BYTES,
    };
    fetch(acting, &job.module, &mut module).await?;
    let module_hash = weft_core::ContentHash::of(&module.bytes);
    let module = runtime.module(&module.bytes)?;
    let inputs = workdir.join("in");
    std::fs::create_dir_all(&inputs)?;
    // Inputs are fetched [`AT_ONCE`] at a time: their round trips overlap.
    let mounted = !mounts.is_empty();
    // Boxed, so the stream's futures have one type whatever the borrows (a task's future must
    // be `Send` for every lifetime the closure could be called with).
    let fetches: Vec<futures_util::future::BoxFuture<'_, Result<u64, RunnerError>>> = mounts
        .into_iter()
        .map(|(rel, source)| {
            let path = inputs.join(rel);
            Box::pin(async move {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let file = tokio::fs::File::create(&path).await?;
                let mut writer = tokio::io::BufWriter::new(file);
                fetch(acting, source, &mut writer).await?;
                tokio::io::AsyncWriteExt::flush(&mut writer).await?;
                Ok(std::fs::metadata(&path)?.len())
            }) as futures_util::future::BoxFuture<'_, _>
        })
        .collect();
    let fetched = futures_util::stream::iter(fetches)
        .buffer_unordered(AT_ONCE)
        .collect::<Vec<_>>()
        .await;
    let mut input_bytes = 0;
    for n in fetched {
        input_bytes += n?;
    }
    let spec = RunSpec {
        args: job.args.clone(),
        env: job.env.clone(),
        inputs: mounted.then(|| inputs.clone()),
        output: workdir.join("out"),
        stdout: workdir.join("stdout"),
        stderr: workdir.join("stderr"),
        limits: job.limits,
        profile,
        cancel,
    };
    let (rt, name, run_spec) = (runtime.clone(), job.name.clone(), spec.clone());
    let result = tokio::task::spawn_blocking(move || rt.run(&name, &module, &run_spec))
        .await
        .map_err(|e| RunError::Trap(format!("the runner thread failed: {e}")))?;
    if let (Ok(_), Some(tamper)) = (&result, tamper) {
        tamper(&spec.output);
    }
    // Its logs are kept however it ended; its outputs only if it finished.
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    if result.is_ok() {
        files.extend(files_under(&spec.output)?.into_iter().filter_map(|rel| {
            let key = rel.to_str()?.to_string();
            Some((key, spec.output.join(rel)))
        }));
    }
    files.push(("stdout".into(), spec.stdout.clone()));
    files.push(("stderr".into(), spec.stderr.clone()));
    // Written [`AT_ONCE`] at a time, listed in the order above.
    let written = futures_util::stream::iter(files.into_iter().map(|(rel, path)| {
        let key = format!("{}{rel}", job.output_prefix);
        async move {
            let hash = file_hash(&path)?;
            let file = tokio::fs::File::open(&path).await?;
            let (record, _) = acting.objects().put(&job.output_bucket, &key, file).await?;
            Ok::<_, RunnerError>((key, record.size, hash))
        }
    }))
    .buffered(AT_ONCE)
    .collect::<Vec<_>>()
    .await;
    let hashed = written.into_iter().collect::<Result<Vec<_>, _>>()?;
    let outcome = result?;
    // Keys relative to the output prefix: a run that writes elsewhere (a verification run)
    // commits to the same result.
    let relative: Vec<(String, u64, [u8; 32])> = hashed
        .iter()
        .map(|(k, size, hash)| {
            let rel = k.strip_prefix(&job.output_prefix).unwrap_or(k);
            (rel.to_string(), *size, *hash)
        })
        .collect();
    Ok(JobReport {
        result: result_commitment(outcome.exit_code, &relative, profile),
        outcome,
        input_bytes,
        outputs: hashed.into_iter().map(|(k, size, _)| (k, size)).collect(),
        module: module_hash,
    })
}

/// Read the object `source` names into `writer` (authorized by the caller).
/// A buffer that takes at most `cap` bytes; a write past it fails.
struct Capped {
    bytes: Vec<u8>,
    cap: usize,
}

impl tokio::io::AsyncWrite for Capped {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.bytes.len() + buf.len() > self.cap {
            let cap = self.cap;
            return std::task::Poll::Ready(Err(std::io::Error::other(format!(
                "the module is larger than a module may be ({cap} bytes)"
            ))));
        }
        self.bytes.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

async fn fetch<W: tokio::io::AsyncWrite + Unpin>(
    acting: &Acting,
    source: &Source,
    writer: W,
) -> Result<(), RunnerError> {
    match source {
        Source::Object { bucket, key } => {
            acting.objects().get(bucket, key, writer).await?;
        }
        Source::Capability(text) => {
            let cap = Capability::from_text(text).map_err(BucketError::from)?;
            acting.objects().get_capability(&cap, writer).await?;
        }
        Source::File(f) => return Err(RunnerError::BadInputKey(f.clone())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_keys_are_mounted() {
        assert_eq!(mount_path("a/b.txt"), Some(PathBuf::from("a/b.txt")));
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/.",
            "dir/",
        ] {
            assert_eq!(mount_path(bad), None, "{bad:?}");
        }
    }
}
