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

use std::path::{Component, Path, PathBuf};

use weft_compute::runtime::{Limits, Outcome, RunError, RunSpec, Runtime};

use weft_data::{Acting, Need, check_key};

use crate::RunnerError;

/// One input object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobInput {
    /// Its bucket.
    pub bucket: String,
    /// Its key (also its path under `/in`).
    pub key: String,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct JobRun {
    /// A name for the job (argv\[0\]).
    pub name: String,
    /// The module (WebAssembly binary or text).
    pub module: Vec<u8>,
    /// Arguments after argv\[0\].
    pub args: Vec<String>,
    /// Environment.
    pub env: Vec<(String, String)>,
    /// Inputs, mounted read-only at `/in/<key>`.
    pub inputs: Vec<JobInput>,
    /// Inputs named by capability, mounted read-only at `/in/<name>`.
    pub capabilities: Vec<(String, weft_store::Capability)>,
    /// The bucket outputs are written to.
    pub output_bucket: String,
    /// The key prefix of every output (`out/<path>` becomes `<prefix><path>`).
    pub output_prefix: String,
    /// Limits.
    pub limits: Limits,
    /// Set to stop the run (see [`RunSpec::cancel`]).
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// How a run went.
#[derive(Clone, Debug)]
pub struct JobReport {
    /// The module's outcome.
    pub outcome: Outcome,
    /// Input bytes fetched.
    pub input_bytes: u64,
    /// Objects written: key and size (stdout and stderr included).
    pub outputs: Vec<(String, u64)>,
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

/// Run `job` here for the account `acting` acts as, in `workdir` (which it may fill; the
/// caller removes it).
pub async fn run_job(
    acting: &Acting,
    runtime: &Runtime,
    job: &JobRun,
    workdir: &Path,
) -> Result<JobReport, RunnerError> {
    // Authorize everything before fetching a byte or running an instruction.
    check_key(&format!("{}x", job.output_prefix))?;
    acting.authorize(&job.output_bucket, Need::Write).await?;
    let mut mounts = Vec::with_capacity(job.inputs.len());
    for input in &job.inputs {
        acting.authorize(&input.bucket, Need::Read).await?;
        let path =
            mount_path(&input.key).ok_or_else(|| RunnerError::BadInputKey(input.key.clone()))?;
        mounts.push(path);
    }
    for (name, _) in &job.capabilities {
        let path = mount_path(name).ok_or_else(|| RunnerError::BadInputKey(name.clone()))?;
        mounts.push(path);
    }
    let module = runtime.module(&job.module)?;
    let inputs = workdir.join("in");
    std::fs::create_dir_all(&inputs)?;
    let mut input_bytes = 0;
    let sources = job
        .inputs
        .iter()
        .map(Some)
        .chain(job.capabilities.iter().map(|_| None));
    let mut caps = job.capabilities.iter();
    for (input, rel) in sources.zip(&mounts) {
        let path = inputs.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = tokio::fs::File::create(&path).await?;
        let mut writer = tokio::io::BufWriter::new(file);
        match input {
            Some(input) => {
                acting
                    .objects()
                    .get(&input.bucket, &input.key, &mut writer)
                    .await?;
            }
            None => {
                if let Some((_, cap)) = caps.next() {
                    acting.objects().get_capability(cap, &mut writer).await?;
                }
            }
        }
        tokio::io::AsyncWriteExt::flush(&mut writer).await?;
        input_bytes += std::fs::metadata(&path)?.len();
    }
    let spec = RunSpec {
        args: job.args.clone(),
        env: job.env.clone(),
        inputs: (!mounts.is_empty()).then(|| inputs.clone()),
        output: workdir.join("out"),
        stdout: workdir.join("stdout"),
        stderr: workdir.join("stderr"),
        limits: job.limits,
        cancel: job.cancel.clone(),
    };
    let (rt, name, run_spec) = (runtime.clone(), job.name.clone(), spec.clone());
    let result = tokio::task::spawn_blocking(move || rt.run(&name, &module, &run_spec))
        .await
        .map_err(|e| RunError::Trap(format!("the runner thread failed: {e}")))?;
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
    let mut outputs = Vec::new();
    for (rel, path) in files {
        let key = format!("{}{rel}", job.output_prefix);
        let file = tokio::fs::File::open(&path).await?;
        let (record, _) = acting.objects().put(&job.output_bucket, &key, file).await?;
        outputs.push((key, record.size));
    }
    let outcome = result?;
    Ok(JobReport {
        outcome,
        input_bytes,
        outputs,
    })
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
