//! `weft pipeline`: run a DAG of jobs (a TOML file of `[[step]]`s) whose outputs feed later
//! steps' inputs. Each step is an ordinary job — any node takes it, the scheduler places it near
//! its own inputs, a lost runner's attempt runs again elsewhere. This command drives the DAG:
//! it submits the steps whose inputs are ready (independent ones at once), reuses a step whose
//! module, inputs' content ids, args, env and output folder are unchanged since it last
//! finished, and keeps the run's state as an object of the pipeline's bucket, so
//! `weft pipeline status` works from any node and a rerun resumes where a run stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use weft_api::{ApiClient, ApiError, ListedObject};
use weft_compute::pipeline::{
    Input, OutputObject, Pipeline, PipelineRun, PipelineSpec, StepRun, StepState,
    resolve_step_input, reusable, state_key, step_key,
};
use weft_compute::spec::{JobSpec, Source};
use weft_jobs::JobStatus;

use crate::account::Actor;
use crate::jobs::{job_path, session_client, upload_module};
use crate::objects::path_escape;

/// `weft pipeline ...`.
#[derive(Subcommand, Debug)]
pub enum PipelineCommand {
    /// Run a pipeline file: every step whose inputs changed, reusing the rest; waits for it
    Run {
        /// The pipeline (TOML: name, bucket, [[step]] tables)
        file: PathBuf,
        /// Run this step and every step after it again, even if unchanged
        #[arg(long)]
        from: Option<String>,
        /// Print the run's final state as JSON
        #[arg(long)]
        json: bool,
    },
    /// Show the last run of a pipeline, step by step
    Status {
        /// The pipeline file, or BUCKET/NAME
        pipeline: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

/// Run a pipeline command.
pub fn run(who: &Actor, cmd: PipelineCommand) -> Result<()> {
    match cmd {
        PipelineCommand::Run { file, from, json } => run_pipeline(who, &file, from, json),
        PipelineCommand::Status { pipeline, json } => status(who, &pipeline, json),
    }
}

fn read_spec(file: &Path) -> Result<PipelineSpec> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read pipeline {}", file.display()))?;
    toml::from_str(&text).with_context(|| format!("pipeline {} is not valid", file.display()))
}

fn state_path(bucket: &str, name: &str) -> String {
    format!(
        "/v1/b/{}/{}",
        path_escape(bucket),
        path_escape(&state_key(name))
    )
}

/// The last run's state, if there was one.
fn load_state(api: &ApiClient, bucket: &str, name: &str) -> Result<Option<PipelineRun>> {
    let mut bytes = Vec::new();
    match api.download(&state_path(bucket, name), &mut bytes) {
        Ok(_) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
            format!("the state of pipeline {name} in {bucket} is not readable")
        })?)),
        Err(ApiError::Refused { status: 404, .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn save_state(api: &ApiClient, run: &PipelineRun) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(run)?;
    let _: weft_api::PutAnswer = api.upload_put(
        &state_path(&run.bucket, &run.pipeline),
        &mut bytes.as_slice(),
    )?;
    Ok(())
}

/// Content ids of objects (`BUCKET/KEY` → content id), listed once per folder.
#[derive(Default)]
struct Ids {
    folders: BTreeMap<(String, String), BTreeMap<String, String>>,
}

/// `BUCKET/KEY` → (bucket, key, the key's folder).
fn folder_of(object: &str) -> Option<(&str, &str, &str)> {
    let (bucket, key) = object.split_once('/')?;
    Some((bucket, key, key.rfind('/').map_or("", |i| &key[..=i])))
}

impl Ids {
    fn of(&mut self, api: &ApiClient, object: &str) -> Result<Option<String>> {
        if object.starts_with("weft-cap") {
            // A capability names a manifest, which names the content.
            return Ok(Some(blake3::hash(object.as_bytes()).to_hex()[..32].into()));
        }
        let (bucket, key, folder) =
            folder_of(object).with_context(|| format!("{object:?} is not BUCKET/KEY"))?;
        let listed = match self.folders.entry((bucket.to_string(), folder.to_string())) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let rows: Vec<ListedObject> = api.get(&format!(
                    "/v1/b/{}?prefix={}",
                    path_escape(bucket),
                    path_escape(folder)
                ))?;
                e.insert(rows.into_iter().map(|r| (r.key, r.content_id)).collect())
            }
        };
        Ok(listed.get(key).cloned())
    }

    /// Forget a folder (a step just wrote into it).
    fn forget(&mut self, object: &str) {
        if let Some((bucket, _, folder)) = folder_of(object) {
            self.folders
                .remove(&(bucket.to_string(), folder.to_string()));
        }
    }
}

/// What a step will run on: its job spec with inputs resolved, and the reuse key.
fn prepare(
    api: &ApiClient,
    ids: &mut Ids,
    p: &Pipeline,
    runs: &[StepRun],
    i: usize,
) -> Result<std::result::Result<(JobSpec, String), String>> {
    let step = &p.steps[i];
    let mut job = step.job.clone();
    for input in &step.inputs {
        match input {
            Input::Given(t) => job.inputs.push(t.clone()),
            Input::Step { step: j, file } => {
                match resolve_step_input(&p.steps[*j], &runs[*j].outputs, file.as_deref()) {
                    Ok(objects) => job.inputs.extend(objects),
                    Err(why) => return Ok(Err(why)),
                }
            }
        }
    }
    let module_id = match ids.of(api, &job.module)? {
        Some(id) => id,
        None => return Ok(Err(format!("module {} does not exist", job.module))),
    };
    let mut inputs = Vec::new();
    for object in &job.inputs {
        match ids.of(api, object)? {
            Some(id) => inputs.push((object.clone(), id)),
            None => return Ok(Err(format!("input {object} does not exist"))),
        }
    }
    let key = step_key(&module_id, &inputs, &job);
    Ok(Ok((job, key)))
}

fn now_ms() -> u64 {
    weft_net::now_ms()
}

fn run_pipeline(who: &Actor, file: &Path, from: Option<String>, json: bool) -> Result<()> {
    let spec = read_spec(file)?;
    let p = spec.validate()?;
    let forced: BTreeSet<usize> = match &from {
        None => BTreeSet::new(),
        Some(name) => {
            let i = p.step(name).with_context(|| {
                format!(
                    "--from {name}: the pipeline has no such step (steps: {})",
                    p.steps
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            p.downstream(i)
        }
    };
    // One narrow session for the pipeline: it writes its own bucket (state, uploaded modules)
    // and every step's output bucket, reads the buckets its steps' inputs name, for as long as
    // every step may take.
    let mut write: Vec<String> = vec![p.bucket.clone()];
    let mut read: Vec<String> = Vec::new();
    let mut ttl = Duration::ZERO;
    for s in &p.steps {
        let job = s.job.validate()?;
        if !write.contains(&job.output_bucket) {
            write.push(job.output_bucket.clone());
        }
        let mut named = Vec::new();
        if let Source::Object { bucket, .. } = &job.module {
            named.push(bucket.clone());
        }
        for i in &s.inputs {
            if let Input::Given(t) = i
                && !t.starts_with("weft-cap")
                && let Some((b, _)) = t.split_once('/')
            {
                named.push(b.to_string());
            }
        }
        for b in named {
            if !read.contains(&b) {
                read.push(b);
            }
        }
        ttl = ttl.saturating_add(job.limits.deadline.saturating_mul(job.retries + 1));
    }
    read.retain(|b| !write.contains(b));
    let write: Vec<&str> = write.iter().map(String::as_str).collect();
    let read: Vec<&str> = read.iter().map(String::as_str).collect();
    let api = session_client(who, &write, &read, ttl)?;
    let mut steps = p.steps.clone();
    for s in &mut steps {
        if let Source::File(f) = s.job.validate()?.module {
            // Local modules are relative to the pipeline file.
            let dir = file.parent().unwrap_or(Path::new("."));
            let path = if Path::new(&f).is_absolute() {
                PathBuf::from(&f)
            } else {
                dir.join(&f)
            };
            s.job.module = upload_module(&api, &path.display().to_string(), &p.bucket)?;
        }
    }
    let p = Pipeline { steps, ..p };

    let earlier = load_state(&api, &p.bucket, &p.name)?;
    let earlier_step = |name: &str| {
        earlier
            .as_ref()
            .and_then(|e| e.steps.iter().find(|s| s.name == name))
            .cloned()
    };
    let mut run = PipelineRun {
        pipeline: p.name.clone(),
        bucket: p.bucket.clone(),
        started_ms: now_ms(),
        ended_ms: None,
        steps: p.steps.iter().map(|s| StepRun::waiting(&s.name)).collect(),
    };
    let started = Instant::now();
    let mut ids = Ids::default();
    let width = p.steps.iter().map(|s| s.name.len()).max().unwrap_or(4);
    let say = |name: &str, what: String| {
        if !json {
            eprintln!("{name:<width$}  {what}");
        }
    };
    loop {
        for i in p.advance(&mut run.steps) {
            let name = p.steps[i].name.clone();
            run.steps[i].started_ms = Some(now_ms());
            let (job, key) = match prepare(&api, &mut ids, &p, &run.steps, i)? {
                Ok(ready) => ready,
                Err(why) => {
                    say(&name, format!("failed: {why}"));
                    let s = &mut run.steps[i];
                    (s.state, s.error, s.ended_ms) = (StepState::Failed, Some(why), Some(now_ms()));
                    continue;
                }
            };
            run.steps[i].key = Some(key.clone());
            let before = earlier_step(&name);
            let unchanged = !forced.contains(&i)
                && reusable(before.as_ref(), &key, |o| ids.of(&api, o).ok().flatten());
            if let (true, Some(b)) = (unchanged, &before) {
                let s = &mut run.steps[i];
                s.state = StepState::Reused;
                (s.job, s.runner, s.outputs) = (b.job.clone(), b.runner.clone(), b.outputs.clone());
                s.ended_ms = Some(now_ms());
                say(
                    &name,
                    format!(
                        "reused: unchanged since {}",
                        b.job.as_deref().unwrap_or("an earlier run")
                    ),
                );
                continue;
            }
            // A step an earlier run left running under the same key (its driver stopped) is
            // followed, not run twice.
            let adopt = before.filter(|b| {
                !forced.contains(&i)
                    && b.state == StepState::Running
                    && b.key.as_deref() == Some(key.as_str())
                    && b.job.is_some()
            });
            let id = match adopt {
                Some(b) => {
                    let id = b.job.unwrap_or_default();
                    say(
                        &name,
                        format!("following {id}, still running from an earlier run"),
                    );
                    id
                }
                None => {
                    let mut spec = job;
                    spec.name = Some(format!("{}.{}", p.name, name));
                    let s: JobStatus = api.post("/v1/jobs", &spec)?;
                    say(&name, format!("submitted {}", s.id));
                    s.id
                }
            };
            run.steps[i].state = StepState::Running;
            run.steps[i].job = Some(id);
        }
        save_state(&api, &run)?;
        if run.steps.iter().all(|s| s.state.ended()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(150));
        for i in 0..run.steps.len() {
            if run.steps[i].state != StepState::Running {
                continue;
            }
            let id = run.steps[i].job.clone().unwrap_or_default();
            let s: JobStatus = api.get(&job_path(&id)?)?;
            if s.runner.is_some() && run.steps[i].runner != s.runner {
                run.steps[i].runner = s.runner.clone();
                if s.state == "running" {
                    say(
                        &p.steps[i].name,
                        format!("running on {}", short(s.runner.as_deref())),
                    );
                }
            }
            if !matches!(s.state.as_str(), "done" | "failed" | "cancelled") {
                continue;
            }
            let step = &mut run.steps[i];
            step.ended_ms = Some(now_ms());
            let took = (step.ended_ms.unwrap_or(0)).saturating_sub(step.started_ms.unwrap_or(0))
                as f64
                / 1e3;
            if s.state == "done" && s.exit_code == Some(0) {
                let prefix = p.steps[i].job.output.clone();
                let (bucket, _) = prefix.split_once('/').unwrap_or((&prefix, ""));
                let logs = [format!("{prefix}stdout"), format!("{prefix}stderr")];
                let mut outputs = Vec::new();
                for (key, size) in s.runs.last().map(|r| r.outputs.clone()).unwrap_or_default() {
                    let object = format!("{bucket}/{key}");
                    if logs.contains(&object) {
                        continue;
                    }
                    ids.forget(&object);
                    let content_id = match ids.of(&api, &object)? {
                        Some(id) => id,
                        None => bail!("step {}: its output {object} is gone", step.name),
                    };
                    outputs.push(OutputObject {
                        object,
                        size,
                        content_id,
                    });
                }
                step.state = StepState::Done;
                let n = outputs.len();
                step.outputs = outputs;
                say(
                    &p.steps[i].name,
                    format!(
                        "done in {took:.1} s on {} ({n} output{})",
                        short(s.runner.as_deref()),
                        if n == 1 { "" } else { "s" }
                    ),
                );
            } else {
                let why = match (s.state.as_str(), s.exit_code) {
                    ("done", Some(code)) => format!("exited with code {code}"),
                    ("failed", _) => s.error.clone().unwrap_or_else(|| "failed".into()),
                    (other, _) => other.to_string(),
                };
                say(
                    &p.steps[i].name,
                    format!("failed after {took:.1} s: {why} (`weft job logs {id} --stderr`)"),
                );
                step.state = StepState::Failed;
                step.error = Some(why);
            }
        }
    }
    run.ended_ms = Some(now_ms());
    save_state(&api, &run)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&run)?);
    } else {
        print_run(&run);
        eprintln!(
            "pipeline {} {} in {:.1} s (`weft pipeline status {}/{}`)",
            run.pipeline,
            run.state(),
            started.elapsed().as_secs_f64(),
            run.bucket,
            run.pipeline
        );
    }
    if run.state() != "done" {
        let failed: Vec<&str> = run
            .steps
            .iter()
            .filter(|s| s.state == StepState::Failed)
            .map(|s| s.name.as_str())
            .collect();
        bail!(
            "pipeline {} failed at step {}; fix it and run the pipeline again (finished steps are reused)",
            run.pipeline,
            failed.join(", ")
        );
    }
    Ok(())
}

fn short(id: Option<&str>) -> String {
    id.map_or("-".into(), |r| r.get(..12).unwrap_or(r).to_string())
}

fn print_run(run: &PipelineRun) {
    println!(
        "{:<16} {:<8} {:<34} {:<12} {:>8}  OUTPUTS",
        "STEP", "STATE", "JOB", "RUNNER", "SECONDS"
    );
    for s in &run.steps {
        let secs = match (s.started_ms, s.ended_ms, s.state) {
            (_, _, StepState::Reused) => "-".into(),
            (Some(a), Some(b), _) => format!("{:.1}", b.saturating_sub(a) as f64 / 1e3),
            _ => "-".into(),
        };
        let state = match s.state {
            StepState::Waiting => "waiting",
            StepState::Running => "running",
            StepState::Done => "done",
            StepState::Reused => "reused",
            StepState::Failed => "failed",
            StepState::Skipped => "skipped",
        };
        let outputs: Vec<&str> = s.outputs.iter().map(|o| o.object.as_str()).collect();
        println!(
            "{:<16} {:<8} {:<34} {:<12} {:>8}  {}",
            s.name,
            state,
            s.job.as_deref().unwrap_or("-"),
            short(s.runner.as_deref()),
            secs,
            if outputs.is_empty() {
                s.error.clone().unwrap_or_default()
            } else {
                outputs.join(" ")
            }
        );
    }
}

fn status(who: &Actor, pipeline: &str, json: bool) -> Result<()> {
    let (bucket, name) = if Path::new(pipeline).is_file() {
        let spec = read_spec(Path::new(pipeline))?;
        (spec.bucket, spec.name)
    } else {
        match pipeline.split_once('/') {
            Some((b, n)) if !b.is_empty() && !n.is_empty() => (b.to_string(), n.to_string()),
            _ => bail!("{pipeline:?}: give the pipeline file or BUCKET/NAME"),
        }
    };
    let api = who.client(false, &[&bucket])?;
    let Some(mut run) = load_state(&api, &bucket, &name)? else {
        bail!("pipeline {name} has not run in bucket {bucket}");
    };
    // A step the state still shows running may have ended since (or its driver stopped).
    for s in &mut run.steps {
        if s.state == StepState::Running
            && let Some(id) = &s.job
            && let Ok(j) = api.get::<JobStatus>(&job_path(id)?)
        {
            s.runner = j.runner.clone().or(s.runner.take());
            if j.state != "running" && j.state != "queued" {
                s.error = Some(format!(
                    "its job is {} (the run that started it stopped before recording it)",
                    j.state
                ));
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&run)?);
    } else {
        println!(
            "pipeline {} in {}: {}",
            run.pipeline,
            run.bucket,
            run.state()
        );
        print_run(&run);
    }
    Ok(())
}
