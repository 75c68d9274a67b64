//! What an account asks of its jobs: status, listing, cancellation and logs (from the
//! runner while the job runs, from the saved objects once it ended).

use std::sync::atomic::Ordering;

use weft_compute::lease::JobState;
use weft_compute::schema::{JobBucket, JobRecord, Jobs};
use weft_data::{Acting, BucketError, Need};

use crate::definition::Definition;
use crate::protocol::{JOB_RPC, JobAnswer, JobAsk, LOG_CHUNK};
use crate::status::status_of;
use crate::{JobError, JobKey, JobService, JobStatus};

impl JobService {
    /// A job of `bucket` as the account `session` acts as reads it: its row and definition.
    pub(crate) async fn load(
        &self,
        session: &str,
        bucket: &str,
        id: &str,
    ) -> Result<(Acting, JobKey, JobRecord, Definition), JobError> {
        let b = self.acting(session)?;
        let rec_b = b.authorize(bucket, Need::Read).await?;
        let key = JobKey {
            owner: rec_b.owner,
            bucket: bucket.to_string(),
            id: id.to_string(),
        };
        let rec = self
            .inner
            .table
            .get_value::<Jobs>(&key.part(), &key.id)
            .await?
            .ok_or_else(|| JobError::NoJob(key.reference()))?;
        let def = Self::open_definition(&b, &key, &rec)?;
        Ok((b, key, rec, def))
    }

    /// A job of the account `session` acts as.
    pub async fn status(
        &self,
        session: &str,
        bucket: &str,
        id: &str,
    ) -> Result<JobStatus, JobError> {
        let (_, key, rec, def) = self.load(session, bucket, id).await?;
        Ok(status_of(&key, &rec, &def))
    }

    /// Jobs of `bucket`, or of every bucket of the account, newest first.
    pub async fn list(
        &self,
        session: &str,
        bucket: Option<&str>,
    ) -> Result<Vec<JobStatus>, JobError> {
        let b = self.acting(session)?;
        let buckets: Vec<String> = match bucket {
            Some(name) => vec![name.to_string()],
            None => b
                .list_buckets()
                .await?
                .into_iter()
                .map(|r| r.name)
                .collect(),
        };
        let mut out = Vec::new();
        for name in buckets {
            let rec_b = b.authorize(&name, Need::Read).await?;
            let part = JobBucket {
                owner: rec_b.owner,
                bucket: name.clone(),
            };
            for (id, row) in self.inner.table.list::<Jobs>(&part, "").await? {
                let Some(weft_meta::Value::Known(rec)) = row.value else {
                    continue;
                };
                let key = JobKey {
                    owner: rec_b.owner,
                    bucket: name.clone(),
                    id,
                };
                if let Ok(def) = Self::open_definition(&b, &key, &rec) {
                    out.push(status_of(&key, &rec, &def));
                }
            }
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.submitted_ms));
        Ok(out)
    }

    /// Cancel a job (a running attempt stops at its runner's next renewal, within a second).
    pub async fn cancel(
        &self,
        session: &str,
        bucket: &str,
        id: &str,
    ) -> Result<JobStatus, JobError> {
        let b = self.acting(session)?;
        let rec_b = b.authorize(bucket, Need::Write).await?;
        let key = JobKey {
            owner: rec_b.owner,
            bucket: bucket.to_string(),
            id: id.to_string(),
        };
        let rec = self
            .change(b.signer()?, &key, |r| {
                r.life = r.life.cancel()?;
                Ok(())
            })
            .await?;
        if let Some(local) = self.inner.running.lock().get(&key) {
            local.cancel.store(true, Ordering::Relaxed);
        }
        let def = Self::open_definition(&b, &key, &rec)?;
        Ok(status_of(&key, &rec, &def))
    }

    /// A job's stdout (or stderr) from byte `offset`: from its runner while it runs, from the
    /// object it was saved as once it ended. Also whether it is still running.
    pub async fn logs(
        &self,
        session: &str,
        bucket: &str,
        id: &str,
        stderr: bool,
        offset: u64,
    ) -> Result<(Vec<u8>, bool), JobError> {
        let (b, key, rec, def) = self.load(session, bucket, id).await?;
        if let JobState::Running { runner, .. } = rec.life.state {
            if runner == self.inner.me {
                return self.local_logs(&key, session, stderr, offset).await;
            }
            if let Some(addr) = self.inner.fabric.member(&runner).and_then(|m| m.addr) {
                // The runner learns who reads, nothing to act with.
                let public = weft_data::Session::from_text(session)?.public_part();
                let ask = JobAsk::Logs {
                    key: key.clone(),
                    session: public.to_text(),
                    stderr,
                    offset,
                };
                if let Ok(JobAnswer::Logs { bytes, running }) =
                    JOB_RPC.call(&self.inner.endpoint, runner, addr, &ask).await
                {
                    return Ok((bytes, running));
                }
            }
            return Ok((Vec::new(), true));
        }
        let running = !rec.life.ended();
        let name = format!(
            "{}{}",
            def.job.output_prefix,
            if stderr { "stderr" } else { "stdout" }
        );
        // Only the chunk asked for is fetched: a log may be gigabytes.
        let record = match b.objects().object(bucket, &name).await {
            Ok(r) => r,
            Err(BucketError::NoObject(..)) => return Ok((Vec::new(), running)),
            Err(e) => return Err(e.into()),
        };
        let start = offset.min(record.size);
        let end = start.saturating_add(LOG_CHUNK).min(record.size);
        let mut bytes = Vec::with_capacity((end - start) as usize);
        if end > start {
            b.objects()
                .read_range((bucket, &name), &record, start, end, &mut bytes)
                .await?;
        }
        Ok((bytes, running))
    }

    pub(crate) async fn local_logs(
        &self,
        key: &JobKey,
        session: &str,
        stderr: bool,
        offset: u64,
    ) -> Result<(Vec<u8>, bool), JobError> {
        let b = self.acting(session)?;
        b.entitled(&key.bucket, Need::Read).await?;
        let Some(dir) = self
            .inner
            .running
            .lock()
            .get(key)
            .map(|l| l.workdir.clone())
        else {
            return Ok((Vec::new(), false));
        };
        let path = dir.join(if stderr { "stderr" } else { "stdout" });
        let bytes = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            f.seek(SeekFrom::Start(offset))?;
            let mut out = Vec::new();
            f.take(LOG_CHUNK).read_to_end(&mut out)?;
            Ok(out)
        })
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
        Ok((bytes, true))
    }
}
