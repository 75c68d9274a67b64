//! A job as its account writes it (the fields of a job TOML file, or `weft job run` flags), and
//! its validation into what the scheduler and the runner use. Parsing the file is the
//! binary's; this checks every field and says what is wrong with it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::runtime::{Limits, MAX_MEMORY};
use crate::verify::Policy;

/// Default cpu, cores.
pub const DEFAULT_CPU: f64 = 1.0;
/// Default memory.
pub const DEFAULT_MEMORY: u64 = 256 << 20;
/// Default fuel (about ten billion WebAssembly instructions).
pub const DEFAULT_FUEL: u64 = 10_000_000_000;
/// Default wall deadline.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(600);
/// Default retries after the first attempt.
pub const DEFAULT_RETRIES: u32 = 2;
/// Most retries a job may ask for.
pub const MAX_RETRIES: u32 = 10;

/// A job spec, as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// A name (default: the module's file name).
    #[serde(default)]
    pub name: Option<String>,
    /// The module: a local file (uploaded), `BUCKET/KEY`, or a capability (`weft-cap1-…`).
    pub module: String,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Inputs: `BUCKET/KEY` objects or capabilities, mounted read-only under `/in`.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Where outputs go: `BUCKET/PREFIX` (each file of `/out` becomes `PREFIX<path>`).
    #[serde(default)]
    pub output: String,
    /// Cores (fractions allowed).
    #[serde(default)]
    pub cpu: Option<f64>,
    /// Memory, e.g. `"256MiB"`.
    #[serde(default)]
    pub memory: Option<String>,
    /// Fuel (CPU budget in WebAssembly instructions, roughly).
    #[serde(default)]
    pub fuel: Option<u64>,
    /// Wall deadline, e.g. `"10m"`.
    #[serde(default)]
    pub deadline: Option<String>,
    /// Retries after a failed or lost attempt.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Regions it may run in (default: its inputs' bucket policy; may only narrow it).
    #[serde(default)]
    pub regions: Vec<String>,
    /// Jurisdictions it may run in (likewise).
    #[serde(default)]
    pub jurisdictions: Vec<String>,
    /// Labels its node must carry.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Run near: `node:<id>`, `site:<name>`, or `me` (the submitting client's position).
    #[serde(default)]
    pub near: Option<String>,
    /// Run in the deterministic profile: the wall clock stands at the job's submission, the
    /// monotonic clock ticks per reading, randomness comes from the job's id; the same module
    /// and inputs then give the same outputs on every node (floats are canonical in every job).
    #[serde(default)]
    pub deterministic: bool,
    /// How its result is checked: `none` (the default), `K-of-N` (run on distinct nodes until
    /// `K` agree, at most `N` runs; e.g. `2-of-3`), or `spot:P%` (checked 2-of-3 with
    /// probability `P`). Any check runs the job in the deterministic profile.
    #[serde(default)]
    pub verify: Option<String>,
    /// The most it may cost per 10⁹ fuel, in credits: it is never placed on a node whose
    /// published price is higher (or unknown).
    #[serde(default)]
    pub max_price: Option<f64>,
}

/// Where a job source is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// An object, `bucket/key`.
    Object {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// A capability, as text.
    Capability(String),
    /// A file on the submitting machine (modules only).
    File(String),
}

/// A "near" target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Near {
    /// A node, by id (hex, or its 12-digit short form).
    Node(String),
    /// A site, by name.
    Site(String),
    /// The submitting client.
    Client,
}

/// A spec that passed validation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Its name.
    pub name: String,
    /// The module.
    pub module: Source,
    /// Arguments.
    pub args: Vec<String>,
    /// Environment.
    pub env: Vec<(String, String)>,
    /// Inputs.
    pub inputs: Vec<Source>,
    /// Output bucket.
    pub output_bucket: String,
    /// Output key prefix.
    pub output_prefix: String,
    /// Milli-cores.
    pub cpu_milli: u32,
    /// Limits.
    pub limits: Limits,
    /// Retries.
    pub retries: u32,
    /// Regions (narrowing the inputs' policy).
    pub regions: Vec<String>,
    /// Jurisdictions (upper case).
    pub jurisdictions: Vec<String>,
    /// Required labels.
    pub labels: BTreeMap<String, String>,
    /// Near target.
    pub near: Option<Near>,
}

/// What is wrong with a spec: the field and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("job spec: {field}: {why}")]
pub struct SpecError {
    /// The field.
    pub field: &'static str,
    /// Why.
    pub why: String,
}

fn bad(field: &'static str, why: impl Into<String>) -> SpecError {
    SpecError {
        field,
        why: why.into(),
    }
}

/// A size such as `512`, `64k`, `256MiB`, `1.5GB` (powers of 1024).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    // "k", "kb", "kib" (and m, g): the unit's letter, then an optional "i", then "b".
    let unit = unit.trim().to_ascii_lowercase();
    let letters: Vec<char> = unit.chars().collect();
    let (prefix, rest) = match letters.split_first() {
        None => (None, &[][..]),
        Some((c, rest)) if *c != 'b' => (Some(*c), rest),
        Some(_) => (None, &letters[..]),
    };
    if !matches!(rest, [] | ['b'] | ['i', 'b']) || (prefix.is_none() && rest == ['i', 'b']) {
        return None;
    }
    let mult: u64 = match prefix {
        None => 1,
        Some('k') => 1 << 10,
        Some('m') => 1 << 20,
        Some('g') => 1 << 30,
        Some(_) => return None,
    };
    let bytes = n * mult as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// `bucket/key` (both non-empty), or a capability.
fn source(field: &'static str, text: &str, files: bool) -> Result<Source, SpecError> {
    let t = text.trim();
    if t.starts_with("weft-cap") {
        return Ok(Source::Capability(t.into()));
    }
    // A path (`./m.wasm`, `../m.wasm`, `/abs/m.wasm`) or a bare file name is a local file;
    // anything with a `/` otherwise is BUCKET/KEY (so `code/m.wasm` is an object).
    if files
        && (t.starts_with("./")
            || t.starts_with("../")
            || t.starts_with('/')
            || (!t.contains('/') && (t.ends_with(".wasm") || t.ends_with(".wat"))))
    {
        return Ok(Source::File(t.into()));
    }
    match t.split_once('/') {
        Some((b, k)) if !b.is_empty() && !k.is_empty() => Ok(Source::Object {
            bucket: b.into(),
            key: k.into(),
        }),
        _ => Err(bad(
            field,
            format!(
                "{t:?} is neither BUCKET/KEY nor a capability{}",
                if files { " nor a local .wasm file" } else { "" }
            ),
        )),
    }
}

/// Read a verification policy: `none`, `K-of-N`, `spot:P%` (or `spot:0.P`).
pub fn parse_policy(text: &str) -> Result<Policy, SpecError> {
    let t = text.trim().to_ascii_lowercase();
    let policy = if t.is_empty() || t == "none" {
        Policy::None
    } else if let Some(p) = t.strip_prefix("spot:") {
        let chance = match p.strip_suffix('%') {
            Some(pct) => pct.trim().parse::<f64>().map(|v| v / 100.0),
            None => p.trim().parse::<f64>(),
        }
        .ok()
        .filter(|c| c.is_finite() && (0.0..=1.0).contains(c))
        .ok_or_else(|| bad("verify", format!("{text:?}: spot:P% with P from 0 to 100")))?;
        Policy::SpotCheck {
            per_mille: (chance * 1000.0).round() as u16,
        }
    } else if let Some((k, n)) = t.split_once("-of-") {
        let (Ok(k), Ok(n)) = (k.trim().parse::<u8>(), n.trim().parse::<u8>()) else {
            return Err(bad("verify", format!("{text:?}: K-of-N, e.g. 2-of-3")));
        };
        Policy::Quorum { k, n }
    } else {
        return Err(bad(
            "verify",
            format!("{text:?}: none, K-of-N (e.g. 2-of-3) or spot:P% (e.g. spot:5%)"),
        ));
    };
    policy.validate().map_err(|e| bad("verify", e.to_string()))
}

impl JobSpec {
    /// How its result is checked (see [`parse_policy`]).
    pub fn policy(&self) -> Result<Policy, SpecError> {
        parse_policy(self.verify.as_deref().unwrap_or("none"))
    }

    /// The most it may cost per 10⁹ fuel, micro-credits.
    pub fn max_price_micro(&self) -> Result<Option<u64>, SpecError> {
        match self.max_price {
            None => Ok(None),
            Some(p) if p.is_finite() && (0.0..=1_000.0).contains(&p) => {
                Ok(Some((p * 1e6).round() as u64))
            }
            Some(p) => Err(bad(
                "max_price",
                format!("{p}: credits per 10⁹ fuel, from 0 to 1000"),
            )),
        }
    }

    /// Check every field; the job, or the first thing wrong.
    pub fn validate(&self) -> Result<Job, SpecError> {
        self.policy()?;
        self.max_price_micro()?;
        let module = source("module", &self.module, true)?;
        let inputs = self
            .inputs
            .iter()
            .map(|i| source("inputs", i, false))
            .collect::<Result<Vec<_>, _>>()?;
        let (output_bucket, output_prefix) = match self.output.trim().split_once('/') {
            Some((b, p)) if !b.is_empty() => (b.to_string(), p.to_string()),
            None if !self.output.trim().is_empty() => {
                (self.output.trim().to_string(), String::new())
            }
            _ => return Err(bad("output", "give BUCKET/PREFIX for the job's outputs")),
        };
        let cpu = self.cpu.unwrap_or(DEFAULT_CPU);
        if !(cpu.is_finite() && cpu > 0.0 && cpu <= 256.0) {
            return Err(bad("cpu", format!("{cpu} cores: more than 0, at most 256")));
        }
        let memory = match &self.memory {
            None => DEFAULT_MEMORY,
            Some(m) => parse_size(m)
                .ok_or_else(|| bad("memory", format!("{m:?} is not a size such as \"256MiB\"")))?,
        };
        if !(64 << 10..=MAX_MEMORY).contains(&memory) {
            return Err(bad(
                "memory",
                format!("{memory} bytes: 64 KiB to {} GiB", MAX_MEMORY >> 30),
            ));
        }
        let fuel = self.fuel.unwrap_or(DEFAULT_FUEL);
        if fuel == 0 {
            return Err(bad("fuel", "must be more than 0"));
        }
        let deadline = match &self.deadline {
            None => DEFAULT_DEADLINE,
            Some(d) => humantime::parse_duration(d)
                .map_err(|e| bad("deadline", format!("{d:?}: {e} (e.g. \"90s\", \"10m\")")))?,
        };
        if deadline.is_zero() || deadline > Duration::from_secs(7 * 86_400) {
            return Err(bad("deadline", "more than 0, at most 7 days"));
        }
        let retries = self.retries.unwrap_or(DEFAULT_RETRIES);
        if retries > MAX_RETRIES {
            return Err(bad("retries", format!("{retries}: at most {MAX_RETRIES}")));
        }
        let near = match self.near.as_deref().map(str::trim) {
            None => None,
            Some("me") => Some(Near::Client),
            Some(t) => match t.split_once(':') {
                Some(("node", id)) if !id.is_empty() => Some(Near::Node(id.into())),
                Some(("site", s)) if !s.is_empty() => Some(Near::Site(s.into())),
                _ => return Err(bad("near", format!("{t:?}: node:<id>, site:<name> or me"))),
            },
        };
        let name = match &self.name {
            Some(n) if !n.trim().is_empty() => n.trim().to_string(),
            _ => match &module {
                Source::File(f) | Source::Object { key: f, .. } => f
                    .rsplit('/')
                    .next()
                    .unwrap_or(f)
                    .trim_end_matches(".wasm")
                    .trim_end_matches(".wat")
                    .to_string(),
                Source::Capability(_) => "unnamed".into(),
            },
        };
        Ok(Job {
            name,
            module,
            args: self.args.clone(),
            env: self
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            inputs,
            output_bucket,
            output_prefix,
            cpu_milli: (cpu * 1000.0).round() as u32,
            limits: Limits {
                fuel,
                memory,
                deadline,
            },
            retries,
            regions: self.regions.clone(),
            jurisdictions: self
                .jurisdictions
                .iter()
                .map(|j| j.to_ascii_uppercase())
                .collect(),
            labels: self.labels.clone(),
            near,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        JobSpec {
            module: "./wordcount.wasm".into(),
            inputs: vec!["logs/2026/a.txt".into(), "weft-cap1-abc".into()],
            output: "logs/jobs/wc/".into(),
            ..JobSpec::default()
        }
    }

    #[test]
    fn verification_policies_read_and_bad_ones_are_named() {
        assert_eq!(parse_policy("none"), Ok(Policy::None));
        assert_eq!(parse_policy("2-of-3"), Ok(Policy::Quorum { k: 2, n: 3 }));
        assert_eq!(
            parse_policy("spot:5%"),
            Ok(Policy::SpotCheck { per_mille: 50 })
        );
        assert_eq!(
            parse_policy("spot:0.25"),
            Ok(Policy::SpotCheck { per_mille: 250 })
        );
        for bad in [
            "1-of-3",
            "2-of-4",
            "spot:150%",
            "twice",
            "2-of-x",
            "9-of-12",
        ] {
            let e = parse_policy(bad).unwrap_err();
            assert_eq!(e.field, "verify", "{bad}");
        }
        let mut s = spec();
        s.verify = Some("1-of-2".into());
        assert!(s.validate().unwrap_err().to_string().contains("k > n/2"));
    }

    #[test]
    fn a_spec_validates_with_defaults() {
        let job = spec().validate().unwrap();
        assert_eq!(job.name, "wordcount");
        assert_eq!(job.module, Source::File("./wordcount.wasm".into()));
        assert_eq!(
            job.inputs[0],
            Source::Object {
                bucket: "logs".into(),
                key: "2026/a.txt".into()
            }
        );
        assert_eq!(job.inputs[1], Source::Capability("weft-cap1-abc".into()));
        assert_eq!(
            (job.output_bucket.as_str(), job.output_prefix.as_str()),
            ("logs", "jobs/wc/")
        );
        assert_eq!(job.cpu_milli, 1000);
        assert_eq!(job.limits.memory, DEFAULT_MEMORY);
        assert_eq!(job.retries, DEFAULT_RETRIES);
        let tuned = JobSpec {
            cpu: Some(0.25),
            memory: Some("64MiB".into()),
            deadline: Some("90s".into()),
            near: Some("site:eu-1".into()),
            jurisdictions: vec!["de".into()],
            ..spec()
        }
        .validate()
        .unwrap();
        assert_eq!(tuned.cpu_milli, 250);
        assert_eq!(tuned.limits.memory, 64 << 20);
        assert_eq!(tuned.limits.deadline, Duration::from_secs(90));
        assert_eq!(tuned.near, Some(Near::Site("eu-1".into())));
        assert_eq!(tuned.jurisdictions, ["DE"]);
    }

    #[test]
    fn every_bad_field_is_named() {
        let field = |s: JobSpec| s.validate().unwrap_err().field;
        assert_eq!(
            field(JobSpec {
                module: "nope".into(),
                ..spec()
            }),
            "module"
        );
        assert_eq!(
            field(JobSpec {
                inputs: vec!["x".into()],
                ..spec()
            }),
            "inputs"
        );
        assert_eq!(
            field(JobSpec {
                output: "".into(),
                ..spec()
            }),
            "output"
        );
        assert_eq!(
            field(JobSpec {
                cpu: Some(0.0),
                ..spec()
            }),
            "cpu"
        );
        assert_eq!(
            field(JobSpec {
                memory: Some("lots".into()),
                ..spec()
            }),
            "memory"
        );
        assert_eq!(
            field(JobSpec {
                memory: Some("64TiB".into()),
                ..spec()
            }),
            "memory"
        );
        assert_eq!(
            field(JobSpec {
                memory: Some("8GiB".into()),
                ..spec()
            }),
            "memory"
        );
        assert_eq!(
            field(JobSpec {
                deadline: Some("soon".into()),
                ..spec()
            }),
            "deadline"
        );
        assert_eq!(
            field(JobSpec {
                retries: Some(99),
                ..spec()
            }),
            "retries"
        );
        assert_eq!(
            field(JobSpec {
                near: Some("mars".into()),
                ..spec()
            }),
            "near"
        );
        assert_eq!(
            field(JobSpec {
                fuel: Some(0),
                ..spec()
            }),
            "fuel"
        );
        let e = JobSpec {
            cpu: Some(-1.0),
            ..spec()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().starts_with("job spec: cpu:"), "{e}");
    }

    #[test]
    fn a_toml_file_reads_and_a_misspelt_field_is_refused() {
        let text = r#"
            name = "count"
            module = "code/wordcount.wasm"
            args = ["/in"]
            inputs = ["logs/a.txt"]
            output = "logs/out/"
            cpu = 0.5
            memory = "64MiB"
            deadline = "2m"
            regions = ["eu"]
            [env]
            LANG = "C"
            [labels]
            disk = "ssd"
        "#;
        let spec: JobSpec = toml::from_str(text).unwrap();
        let job = spec.validate().unwrap();
        assert_eq!(job.name, "count");
        assert_eq!(
            job.module,
            Source::Object {
                bucket: "code".into(),
                key: "wordcount.wasm".into()
            }
        );
        assert_eq!(job.env, [("LANG".to_string(), "C".to_string())]);
        assert_eq!(job.labels.get("disk").map(String::as_str), Some("ssd"));
        let typo = toml::from_str::<JobSpec>("module = \"a/b\"\noutput = \"o\"\nmemroy = \"1MiB\"");
        assert!(typo.unwrap_err().to_string().contains("memroy"));
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("256MiB"), Some(256 << 20));
        assert_eq!(parse_size("1.5 GB"), Some(3 << 29));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("1e30"), None);
        assert_eq!(parse_size("12b"), Some(12));
        assert_eq!(parse_size("1gb"), Some(1 << 30));
        assert_eq!(parse_size("1t"), None);
        assert_eq!(parse_size("1kbb"), None);
    }
}
