//! Pipelines: a DAG of job steps whose outputs feed later steps' inputs (the seeds' multi-agent
//! workflows: one step extracts, another aggregates, another reports, another watches for
//! anomalies). This module is the pure part — the file's shape and its validation into a
//! DAG, which steps may start, which must be skipped, whether an earlier run's output can be
//! reused, and the key that decides it. The driver that submits the steps as jobs is the
//! binary's; every step is an ordinary job, placed near its own inputs by the scheduler.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::spec::{JobSpec, SpecError};

/// Where a pipeline's state is kept, in its bucket: `.weft/pipelines/<name>.json`.
pub fn state_key(name: &str) -> String {
    format!(".weft/pipelines/{name}.json")
}

/// A pipeline file, as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Its name (letters, digits, `-`, `_`).
    pub name: String,
    /// The bucket its state, uploaded modules and (by default) its outputs go to.
    pub bucket: String,
    /// Its steps, `[[step]]` tables: job specs with a `name`, whose `inputs` may name an
    /// earlier step's outputs as `@STEP` (all of them) or `@STEP/FILE` (one).
    #[serde(default, rename = "step")]
    pub steps: Vec<JobSpec>,
}

/// One input of a step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// An object or capability, as a job input.
    Given(String),
    /// Outputs of another step: all of them (`None`, logs left out), or one file of its output
    /// folder.
    Step {
        /// The step's index.
        step: usize,
        /// A file under its output prefix.
        file: Option<String>,
    },
}

/// A step that passed validation.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// Its name.
    pub name: String,
    /// Its job, with `inputs` emptied (see `inputs`) and `output` filled in.
    pub job: JobSpec,
    /// Its inputs, in order.
    pub inputs: Vec<Input>,
    /// The steps it needs, by index.
    pub needs: Vec<usize>,
}

/// A pipeline that passed validation: its steps form a DAG.
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    /// Its name.
    pub name: String,
    /// Its bucket.
    pub bucket: String,
    /// Its steps, as written.
    pub steps: Vec<Step>,
    /// The steps in an order where each comes after those it needs.
    pub order: Vec<usize>,
}

/// What is wrong with a pipeline.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    /// A field of the pipeline.
    #[error("pipeline: {0}")]
    Field(String),
    /// A step's job spec.
    #[error("pipeline step {step:?}: {error}")]
    Step {
        /// The step.
        step: String,
        /// What is wrong.
        error: SpecError,
    },
    /// A step's inputs.
    #[error("pipeline step {step:?}: {why}")]
    Input {
        /// The step.
        step: String,
        /// What is wrong.
        why: String,
    },
    /// The steps need each other.
    #[error("pipeline: steps {0} need each other's outputs (a cycle)")]
    Cycle(String),
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl PipelineSpec {
    /// Check the pipeline and every step; the DAG, or the first thing wrong.
    pub fn validate(&self) -> Result<Pipeline, PipelineError> {
        if !valid_name(&self.name) {
            return Err(PipelineError::Field(format!(
                "name {:?}: 1 to 64 letters, digits, '-' or '_'",
                self.name
            )));
        }
        if self.bucket.trim().is_empty() || self.bucket.contains('/') {
            return Err(PipelineError::Field(format!(
                "bucket {:?}: give the bucket its state and outputs go to",
                self.bucket
            )));
        }
        if self.steps.is_empty() {
            return Err(PipelineError::Field(
                "no steps: add [[step]] tables (name, module, inputs, ...)".into(),
            ));
        }
        let mut index = BTreeMap::new();
        for (i, s) in self.steps.iter().enumerate() {
            let name = s.name.clone().unwrap_or_default();
            if !valid_name(&name) {
                return Err(PipelineError::Field(format!(
                    "step {} name {name:?}: every step needs a name of 1 to 64 letters, digits, '-' or '_'",
                    i + 1
                )));
            }
            if index.insert(name.clone(), i).is_some() {
                return Err(PipelineError::Field(format!(
                    "two steps are named {name:?}"
                )));
            }
        }
        let mut steps = Vec::with_capacity(self.steps.len());
        let mut outputs: BTreeMap<String, String> = BTreeMap::new();
        for s in &self.steps {
            let name = s.name.clone().unwrap_or_default();
            let mut inputs = Vec::new();
            let mut needs = BTreeSet::new();
            for text in &s.inputs {
                let t = text.trim();
                let Some(reference) = t.strip_prefix('@') else {
                    inputs.push(Input::Given(t.to_string()));
                    continue;
                };
                let (step, file) = match reference.split_once('/') {
                    Some((st, f)) if !f.is_empty() => (st, Some(f.to_string())),
                    Some((st, _)) => (st, None),
                    None => (reference, None),
                };
                let Some(&j) = index.get(step) else {
                    return Err(PipelineError::Input {
                        step: name,
                        why: format!("input {t:?} names no step (steps: {})", names(&index)),
                    });
                };
                if self.steps[j].name == s.name {
                    return Err(PipelineError::Cycle(format!("{name:?}")));
                }
                needs.insert(j);
                inputs.push(Input::Step { step: j, file });
            }
            let mut job = s.clone();
            job.inputs = Vec::new();
            if job.output.trim().is_empty() {
                job.output = format!("{}/pipelines/{}/{name}/", self.bucket, self.name);
            } else if !job.output.ends_with('/') {
                // Outputs are a folder: `@STEP/FILE` names a file under it.
                job.output.push('/');
            }
            // The rest of the spec is a job's, checked as one (inputs resolved at run time).
            job.validate().map_err(|error| PipelineError::Step {
                step: name.clone(),
                error,
            })?;
            if let Some(other) = outputs.insert(job.output.clone(), name.clone()) {
                return Err(PipelineError::Field(format!(
                    "steps {other:?} and {name:?} both write to {}",
                    job.output
                )));
            }
            steps.push(Step {
                name,
                job,
                inputs,
                needs: needs.into_iter().collect(),
            });
        }
        let order = topological(&steps)?;
        Ok(Pipeline {
            name: self.name.clone(),
            bucket: self.bucket.clone(),
            steps,
            order,
        })
    }
}

fn names(index: &BTreeMap<String, usize>) -> String {
    index.keys().cloned().collect::<Vec<_>>().join(", ")
}

/// Kahn's algorithm, ties by the order written.
fn topological(steps: &[Step]) -> Result<Vec<usize>, PipelineError> {
    let mut waiting: Vec<usize> = steps.iter().map(|s| s.needs.len()).collect();
    let mut order = Vec::with_capacity(steps.len());
    let mut done = vec![false; steps.len()];
    while order.len() < steps.len() {
        let Some(next) = (0..steps.len()).find(|&i| !done[i] && waiting[i] == 0) else {
            let stuck: Vec<String> = (0..steps.len())
                .filter(|&i| !done[i])
                .map(|i| format!("{:?}", steps[i].name))
                .collect();
            return Err(PipelineError::Cycle(stuck.join(", ")));
        };
        done[next] = true;
        order.push(next);
        for (i, s) in steps.iter().enumerate() {
            if s.needs.contains(&next) {
                waiting[i] -= 1;
            }
        }
    }
    Ok(order)
}

impl Pipeline {
    /// A step's index by name.
    pub fn step(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }

    /// The step and every step that (transitively) needs its outputs.
    pub fn downstream(&self, from: usize) -> BTreeSet<usize> {
        let mut out = BTreeSet::from([from]);
        for &i in &self.order {
            if self.steps[i].needs.iter().any(|n| out.contains(n)) {
                out.insert(i);
            }
        }
        out
    }

    /// Steps that may start now (waiting, and everything they need finished well); steps
    /// waiting on a step that failed or was skipped are marked skipped.
    pub fn advance(&self, runs: &mut [StepRun]) -> Vec<usize> {
        let mut ready = Vec::new();
        for &i in &self.order {
            if runs[i].state != StepState::Waiting {
                continue;
            }
            let needs = &self.steps[i].needs;
            if let Some(&bad) = needs
                .iter()
                .find(|&&n| matches!(runs[n].state, StepState::Failed | StepState::Skipped))
            {
                runs[i].state = StepState::Skipped;
                runs[i].error = Some(format!("step {:?} did not finish", self.steps[bad].name));
            } else if needs.iter().all(|&n| runs[n].state.finished_well()) {
                ready.push(i);
            }
        }
        ready
    }
}

/// A step's state in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    /// Waiting for the steps it needs.
    Waiting,
    /// Its job was submitted and has not ended.
    Running,
    /// Its job finished with exit code 0.
    Done,
    /// Nothing it depends on changed: an earlier run's outputs stand.
    Reused,
    /// Its job failed, or exited non-zero.
    Failed,
    /// A step it needs did not finish.
    Skipped,
}

impl StepState {
    /// Done or reused.
    pub fn finished_well(self) -> bool {
        matches!(self, StepState::Done | StepState::Reused)
    }

    /// No longer waiting or running.
    pub fn ended(self) -> bool {
        !matches!(self, StepState::Waiting | StepState::Running)
    }
}

/// An object a step wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputObject {
    /// `BUCKET/KEY`.
    pub object: String,
    /// Size.
    pub size: u64,
    /// Content id (hex) when it was written.
    pub content_id: String,
}

/// One step of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRun {
    /// The step.
    pub name: String,
    /// Where it is.
    pub state: StepState,
    /// Its job (`BUCKET/ID`): this run's, or for a reused step the run that made its outputs.
    pub job: Option<String>,
    /// Its reuse key (module, inputs' content ids, args, env, output).
    pub key: Option<String>,
    /// The node that ran it.
    pub runner: Option<String>,
    /// Unix ms it was submitted (or found reusable).
    pub started_ms: Option<u64>,
    /// Unix ms it ended.
    pub ended_ms: Option<u64>,
    /// Its outputs (logs left out).
    pub outputs: Vec<OutputObject>,
    /// Why it failed or was skipped.
    pub error: Option<String>,
}

impl StepRun {
    /// A step that has not started.
    pub fn waiting(name: &str) -> StepRun {
        StepRun {
            name: name.into(),
            state: StepState::Waiting,
            job: None,
            key: None,
            runner: None,
            started_ms: None,
            ended_ms: None,
            outputs: Vec::new(),
            error: None,
        }
    }
}

/// A run of a pipeline: what `weft pipeline status` shows, kept in the pipeline's bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineRun {
    /// The pipeline.
    pub pipeline: String,
    /// Its bucket.
    pub bucket: String,
    /// Unix ms this run started.
    pub started_ms: u64,
    /// Unix ms it ended.
    pub ended_ms: Option<u64>,
    /// Every step, in the order written.
    pub steps: Vec<StepRun>,
}

impl PipelineRun {
    /// `running`, `done` (every step finished well), or `failed`.
    pub fn state(&self) -> &'static str {
        if self.steps.iter().any(|s| !s.state.ended()) {
            "running"
        } else if self.steps.iter().all(|s| s.state.finished_well()) {
            "done"
        } else {
            "failed"
        }
    }
}

/// What a step's result depends on: the reuse key. Everything that can change what it writes
/// — its module's content, its inputs' content ids and where they are mounted, its args, env
/// and output folder — and nothing that cannot (cpu, memory, fuel, deadline, placement).
pub fn step_key(module_id: &str, inputs: &[(String, String)], job: &JobSpec) -> String {
    let mut h = blake3::Hasher::new_derive_key("weft pipeline step key v1");
    let mut field = |bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(module_id.as_bytes());
    field(&(inputs.len() as u64).to_le_bytes());
    for (name, id) in inputs {
        field(name.as_bytes());
        field(id.as_bytes());
    }
    field(&(job.args.len() as u64).to_le_bytes());
    for a in &job.args {
        field(a.as_bytes());
    }
    field(&(job.env.len() as u64).to_le_bytes());
    for (k, v) in &job.env {
        field(k.as_bytes());
        field(v.as_bytes());
    }
    field(job.output.as_bytes());
    h.finalize().to_hex()[..32].to_string()
}

/// Whether an earlier run of a step stands for this one: it finished well under the same key,
/// and every output it recorded still has the content id it wrote (`now` gives an object's
/// current content id, `None` if it is gone).
pub fn reusable(
    earlier: Option<&StepRun>,
    key: &str,
    mut now: impl FnMut(&str) -> Option<String>,
) -> bool {
    earlier.is_some_and(|e| {
        e.state.finished_well()
            && e.key.as_deref() == Some(key)
            && e.outputs
                .iter()
                .all(|o| now(&o.object).as_deref() == Some(o.content_id.as_str()))
    })
}

/// The objects a step input stands for, given what the producing step wrote: all its outputs
/// (in their order), or the one under its output folder named `file`.
pub fn resolve_step_input(
    producer: &Step,
    wrote: &[OutputObject],
    file: Option<&str>,
) -> Result<Vec<String>, String> {
    match file {
        None if wrote.is_empty() => Err(format!(
            "step {:?} wrote no outputs to feed it",
            producer.name
        )),
        None => Ok(wrote.iter().map(|o| o.object.clone()).collect()),
        Some(f) => {
            let want = format!("{}{f}", producer.job.output);
            wrote
                .iter()
                .find(|o| o.object == want)
                .map(|o| vec![o.object.clone()])
                .ok_or_else(|| {
                    format!(
                        "step {:?} wrote no {f} (it wrote: {})",
                        producer.name,
                        wrote
                            .iter()
                            .map(|o| o.object.trim_start_matches(producer.job.output.as_str()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, inputs: &[&str]) -> JobSpec {
        JobSpec {
            name: Some(name.into()),
            module: format!("./{name}.wasm"),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            ..JobSpec::default()
        }
    }

    fn spec(steps: Vec<JobSpec>) -> PipelineSpec {
        PipelineSpec {
            name: "weblog".into(),
            bucket: "logs".into(),
            steps,
        }
    }

    fn four() -> Pipeline {
        spec(vec![
            step("report", &["@aggregate/summary.csv"]),
            step("aggregate", &["@extract"]),
            step("extract", &["logs/raw/access.log"]),
            step("anomalies", &["@extract", "logs/raw/baseline.txt"]),
        ])
        .validate()
        .unwrap()
    }

    #[test]
    fn a_pipeline_is_ordered_by_what_each_step_needs() {
        let p = four();
        let pos = |n: &str| p.order.iter().position(|&i| p.steps[i].name == n).unwrap();
        assert!(pos("extract") < pos("aggregate"));
        assert!(pos("aggregate") < pos("report"));
        assert!(pos("extract") < pos("anomalies"));
        let report = &p.steps[p.step("report").unwrap()];
        assert_eq!(report.job.output, "logs/pipelines/weblog/report/");
        assert_eq!(
            report.inputs,
            [Input::Step {
                step: p.step("aggregate").unwrap(),
                file: Some("summary.csv".into())
            }]
        );
        let down = p.downstream(p.step("extract").unwrap());
        assert_eq!(down.len(), 4);
        let down = p.downstream(p.step("aggregate").unwrap());
        assert_eq!(
            down,
            BTreeSet::from([p.step("aggregate").unwrap(), p.step("report").unwrap()])
        );
    }

    #[test]
    fn bad_pipelines_say_what_is_wrong() {
        let err = |s: PipelineSpec| s.validate().unwrap_err().to_string();
        assert!(err(spec(vec![])).contains("no steps"));
        assert!(err(spec(vec![step("a", &[]), step("a", &[])])).contains("two steps"));
        assert!(err(spec(vec![step("a", &["@nope"])])).contains("names no step"));
        assert!(err(spec(vec![step("a", &["@a"])])).contains("cycle"));
        let e = err(spec(vec![
            step("a", &["@c"]),
            step("b", &["@a"]),
            step("c", &["@b"]),
            step("d", &[]),
        ]));
        assert!(
            e.contains("cycle") && e.contains("\"a\"") && !e.contains("\"d\""),
            "{e}"
        );
        let mut unnamed = step("a", &[]);
        unnamed.name = None;
        assert!(err(spec(vec![unnamed])).contains("needs a name"));
        let mut bad_cpu = step("a", &[]);
        bad_cpu.cpu = Some(-1.0);
        let e = err(spec(vec![bad_cpu]));
        assert!(e.contains("\"a\"") && e.contains("cpu"), "{e}");
        let mut same = step("b", &[]);
        same.output = "logs/pipelines/weblog/a/".into();
        assert!(err(spec(vec![step("a", &[]), same])).contains("both write"));
        let mut bad = spec(vec![step("a", &[])]);
        bad.name = "a b".into();
        assert!(err(bad).contains("name"));
    }

    #[test]
    fn steps_start_when_what_they_need_is_done_and_are_skipped_after_a_failure() {
        let p = four();
        let id = |n: &str| p.step(n).unwrap();
        let mut runs: Vec<StepRun> = p.steps.iter().map(|s| StepRun::waiting(&s.name)).collect();
        assert_eq!(p.advance(&mut runs), [id("extract")]);
        runs[id("extract")].state = StepState::Running;
        assert!(p.advance(&mut runs).is_empty());
        runs[id("extract")].state = StepState::Reused;
        let mut ready = p.advance(&mut runs);
        ready.sort();
        let mut want = vec![id("aggregate"), id("anomalies")];
        want.sort();
        assert_eq!(ready, want);
        runs[id("aggregate")].state = StepState::Failed;
        runs[id("anomalies")].state = StepState::Done;
        assert!(p.advance(&mut runs).is_empty());
        assert_eq!(runs[id("report")].state, StepState::Skipped);
        let run = PipelineRun {
            pipeline: "weblog".into(),
            bucket: "logs".into(),
            started_ms: 0,
            ended_ms: None,
            steps: runs,
        };
        assert_eq!(run.state(), "failed");
    }

    #[test]
    fn a_step_is_reused_only_when_nothing_it_depends_on_changed() {
        let p = four();
        let job = &p.steps[0].job;
        let inputs = vec![("logs/a".to_string(), "c1".to_string())];
        let key = step_key("m1", &inputs, job);
        assert_eq!(key, step_key("m1", &inputs, job));
        assert_ne!(key, step_key("m2", &inputs, job));
        let changed = vec![("logs/a".to_string(), "c2".to_string())];
        assert_ne!(key, step_key("m1", &changed, job));
        let moved = vec![("logs/b".to_string(), "c1".to_string())];
        assert_ne!(key, step_key("m1", &moved, job));
        let mut args = job.clone();
        args.args = vec!["--threshold".into(), "5".into()];
        assert_ne!(key, step_key("m1", &inputs, &args));
        // Field boundaries count: ["ab"] is not ["a", "b"].
        let mut one = job.clone();
        one.args = vec!["ab".into()];
        let mut two = job.clone();
        two.args = vec!["a".into(), "b".into()];
        assert_ne!(step_key("mod", &[], &one), step_key("mod", &[], &two));
        let mut more_cpu = job.clone();
        more_cpu.cpu = Some(4.0);
        assert_eq!(key, step_key("m1", &inputs, &more_cpu));

        let out = OutputObject {
            object: "logs/x/summary.csv".into(),
            size: 3,
            content_id: "c9".into(),
        };
        let earlier = StepRun {
            state: StepState::Done,
            key: Some(key.clone()),
            outputs: vec![out],
            ..StepRun::waiting("report")
        };
        assert!(reusable(Some(&earlier), &key, |_| Some("c9".into())));
        assert!(!reusable(Some(&earlier), &key, |_| Some("c8".into())));
        assert!(!reusable(Some(&earlier), &key, |_| None));
        assert!(!reusable(Some(&earlier), "other", |_| Some("c9".into())));
        assert!(!reusable(None, &key, |_| Some("c9".into())));
        let failed = StepRun {
            state: StepState::Failed,
            ..earlier
        };
        assert!(!reusable(Some(&failed), &key, |_| Some("c9".into())));
    }

    #[test]
    fn step_inputs_resolve_to_what_the_producer_wrote() {
        let p = four();
        let agg = &p.steps[p.step("aggregate").unwrap()];
        let wrote = vec![OutputObject {
            object: format!("{}summary.csv", agg.job.output),
            size: 1,
            content_id: "c".into(),
        }];
        assert_eq!(
            resolve_step_input(agg, &wrote, Some("summary.csv")).unwrap(),
            ["logs/pipelines/weblog/aggregate/summary.csv"]
        );
        let e = resolve_step_input(agg, &wrote, Some("nope.csv")).unwrap_err();
        assert!(
            e.contains("no nope.csv") && e.contains("summary.csv"),
            "{e}"
        );
        assert!(resolve_step_input(agg, &[], None).is_err());
        assert_eq!(resolve_step_input(agg, &wrote, None).unwrap().len(), 1);
    }

    #[test]
    fn a_pipeline_file_parses() {
        let text = r#"
            name = "weblog"
            bucket = "logs"
            [[step]]
            name = "extract"
            module = "extract.wasm"
            inputs = ["logs/raw/access.log"]
            [[step]]
            name = "aggregate"
            module = "aggregate.wasm"
            inputs = ["@extract"]
            memory = "64MiB"
        "#;
        let spec: PipelineSpec = toml::from_str(text).unwrap();
        let p = spec.validate().unwrap();
        assert_eq!(p.steps.len(), 2);
        assert_eq!(p.order, [0, 1]);
        let typo = text.replace("memory", "memroy");
        assert!(toml::from_str::<PipelineSpec>(&typo).is_err());
    }
}
