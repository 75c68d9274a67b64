//! A job as its row keeps it: its name in the table ([`JobKey`]) and its definition, sealed
//! under the output bucket's key so only the account (and the nodes it hands a session) can
//! read what runs, on what, and where.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use weft_compute::schema::JobBucket;
use weft_compute::schema::{JobRecord, Jobs};
use weft_compute::spec::{Job, Source};
use weft_core::NodeId;
use weft_data::{Acting, BucketError, BucketSeal, check_bucket_name};
use weft_meta::Schema;

use crate::{JobError, JobService};

/// A job's name in the table: its bucket's owner, the bucket, its id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JobKey {
    /// The output bucket's owner.
    pub owner: NodeId,
    /// The output bucket.
    pub bucket: String,
    /// The id, unique in the bucket and time-ordered.
    pub id: String,
}

impl JobKey {
    pub(crate) fn part(&self) -> JobBucket {
        JobBucket {
            owner: self.owner,
            bucket: self.bucket.clone(),
        }
    }

    /// How users name it: `BUCKET/ID`.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.bucket, self.id)
    }

    /// Check a key a peer sent: a valid bucket name and an id of 1 to 32 hex digits, as
    /// submissions make them. Nothing else may reach a path, a row key or a log line.
    pub fn check(&self) -> Result<(), JobError> {
        check_bucket_name(&self.bucket)?;
        let hex = !self.id.is_empty()
            && self.id.len() <= 32
            && self.id.chars().all(|c| c.is_ascii_hexdigit());
        if !hex {
            return Err(JobError::BadId(self.reference()));
        }
        Ok(())
    }

    /// The folder attempt `attempt` works in, under `dir`: named by a hash of the key, so no
    /// key, whatever it holds, names a path outside `dir`.
    pub(crate) fn workdir(&self, dir: &Path, attempt: u32) -> PathBuf {
        let mut h = blake3::Hasher::new_derive_key("weft job workdir v1");
        h.update(&weft_core::wire::encode(self));
        dir.join(format!("{}-{attempt}", &h.finalize().to_hex()[..32]))
    }
}

/// What a job's row seals: the job as validated, and where it may run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Definition {
    /// The job, validated.
    pub job: Job,
    /// Regions it may run in (empty: any), the spec's narrowing of its buckets' policies.
    pub regions: Vec<String>,
    /// Jurisdictions likewise.
    pub jurisdictions: Vec<String>,
    /// For `near = "me"`: the node the client submitted through.
    pub near_node: Option<NodeId>,
    /// Runs in the deterministic profile. Sealed after the fields above (see
    /// [`DefinitionMore`]), so rows written before it existed still open.
    #[serde(skip)]
    pub deterministic: bool,
}

/// What a job's row seals after its [`Definition`]: fields added since, absent (all default)
/// in rows written before them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DefinitionMore {
    /// [`Definition::deterministic`].
    pub deterministic: bool,
}

/// A new job id: the clock (so ids sort by submission) and a little randomness.
pub(crate) fn new_id(now: u64) -> String {
    let mut r = [0u8; 2];
    let _ = getrandom::fill(&mut r);
    format!("{now:012x}{:04x}", u16::from_le_bytes(r))
}

/// Parse `BUCKET/ID`.
pub fn parse_reference(text: &str) -> Result<(String, String), JobError> {
    match text.trim().split_once('/') {
        Some((b, id))
            if !b.is_empty() && !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit()) =>
        {
            Ok((b.to_string(), id.to_string()))
        }
        _ => Err(JobError::BadId(text.to_string())),
    }
}

/// How a job names a module or an input, for people.
pub(crate) fn source_text(s: &Source) -> String {
    match s {
        Source::Object { bucket, key } => format!("{bucket}/{key}"),
        Source::Capability(c) => c.clone(),
        Source::File(f) => f.clone(),
    }
}

/// Intersect allowed sets (empty = anything).
pub(crate) fn narrow(current: &mut Vec<String>, allowed: &[String]) {
    if allowed.is_empty() {
        return;
    }
    if current.is_empty() {
        *current = allowed.to_vec();
    } else {
        current.retain(|c| allowed.contains(c));
        if current.is_empty() {
            // Mark "nothing" distinctly from "anything".
            current.push(String::new());
        }
    }
}

impl JobService {
    pub(crate) fn seal_of(b: &Acting, bucket: &str) -> Result<BucketSeal, JobError> {
        let key = b
            .primary_key(bucket)
            .ok_or_else(|| BucketError::NoKey(bucket.to_string()))?;
        Ok(BucketSeal::new(&key))
    }

    pub(crate) fn open_definition(
        b: &Acting,
        key: &JobKey,
        rec: &JobRecord,
    ) -> Result<Definition, JobError> {
        let corrupt = || {
            JobError::Bucket(BucketError::Corrupt(format!(
                "job {} (its definition does not open)",
                key.reference()
            )))
        };
        let bytes = Self::seal_of(b, &key.bucket)?
            .open_bytes(Jobs::KIND, &key.reference(), &rec.sealed)
            .ok_or_else(corrupt)?;
        let (mut def, rest): (Definition, _) =
            weft_core::wire::decode_prefix(&bytes).map_err(|_| corrupt())?;
        let more: DefinitionMore = if rest.is_empty() {
            DefinitionMore::default()
        } else {
            weft_core::wire::decode(rest).map_err(|_| corrupt())?
        };
        def.deterministic = more.deterministic;
        Ok(def)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residency_narrows_and_an_empty_meet_is_nowhere() {
        let mut r = Vec::new();
        narrow(&mut r, &[]);
        assert!(r.is_empty());
        narrow(&mut r, &["eu".into(), "us".into()]);
        assert_eq!(r, vec!["eu".to_string(), "us".into()]);
        narrow(&mut r, &["eu".into()]);
        assert_eq!(r, vec!["eu".to_string()]);
        narrow(&mut r, &["ap".into()]);
        assert!(r.iter().any(String::is_empty));
    }

    /// [untrusted] 8: a job key from a peer cannot name a folder outside the jobs folder (the
    /// runner removes its working folder when the run ends).
    #[test]
    fn a_job_key_cannot_escape_the_jobs_folder() {
        let owner = weft_core::SecretKey::from_seed([1; 32]).public();
        let key = |bucket: &str, id: &str| JobKey {
            owner,
            bucket: bucket.into(),
            id: id.into(),
        };
        for bad in [
            key("../../etc", "0190a3b4c5d6e7f8"),
            key("logs", "../../../home"),
            key("logs", "/abs"),
            key("logs", ""),
            key("/", "01"),
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
            let dir = Path::new("/data/jobs");
            let w = bad.workdir(dir, 3);
            assert_eq!(w.parent(), Some(dir), "{w:?}");
        }
        let good = key("logs", "0190a3b4c5d6e7f8");
        good.check().unwrap();
        assert_ne!(
            good.workdir(Path::new("/j"), 0),
            good.workdir(Path::new("/j"), 1)
        );
    }

    #[test]
    fn references_are_bucket_slash_hex_id() {
        assert_eq!(
            parse_reference("logs/0190a3b4c5d6e7f8").unwrap(),
            ("logs".into(), "0190a3b4c5d6e7f8".into())
        );
        for bad in ["logs", "/abc", "logs/", "logs/xyz", "a/b/c"] {
            assert!(parse_reference(bad).is_err(), "{bad}");
        }
    }
}
