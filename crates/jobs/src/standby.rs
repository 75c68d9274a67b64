//! Standing by: a second node watches every job, so a job outlives its coordinator.
//!
//! The coordinator hands the client's session to one other live member (another site first)
//! when it takes a submission. The standby runs the coordinator's loop
//! ([`crate::coordinate`]) with a lag: at once while the coordinator is neither alive nor
//! suspect, and otherwise [`STANDBY_LAG_MS`] later than the coordinator would act (a
//! coordinator that restarted has forgotten the jobs it watched). Every transition is a
//! conditional update of the row, so both acting at once is safe: one wins, the other's write
//! is refused.

use weft_compute::schema::JobRecord;
use weft_core::NodeId;
use weft_fabric::MemberState;

use crate::protocol::JobAnswer;
use crate::{JobKey, JobService};

/// How much later than its coordinator a standby acts on a job (while the coordinator is up).
pub const STANDBY_LAG_MS: u64 = 3_000;

impl JobService {
    /// Take the job `key` as its standby, for `coordinator`, with the client's session.
    pub(crate) fn stand_by(&self, coordinator: NodeId, key: JobKey, session: String) -> JobAnswer {
        if self.acting(&session).is_err() {
            return JobAnswer::Refused("the session does not open".into());
        }
        tracing::debug!(job = %key.reference(), %coordinator, "standby for a job");
        self.watch(key, session, false);
        JobAnswer::Watching
    }

    /// How far behind the clock this node acts on `rec`: not at all as its coordinator
    /// (`primary`) or while the coordinator is gone, [`STANDBY_LAG_MS`] otherwise.
    pub(crate) fn lag_ms(&self, rec: &JobRecord, primary: bool) -> u64 {
        let coordinator_gone = self
            .inner
            .fabric
            .member(&rec.coordinator)
            .is_none_or(|m| !matches!(m.state, MemberState::Alive | MemberState::Suspect));
        if primary || coordinator_gone {
            0
        } else {
            STANDBY_LAG_MS
        }
    }

    /// Another live member, another site first, to watch a job if its coordinator is lost.
    pub(crate) fn pick_standby(&self) -> Option<NodeId> {
        let members = self.inner.fabric.members();
        let my_site = members
            .iter()
            .find(|m| m.is_self)
            .map(|m| m.placement.site.clone());
        let mut others: Vec<_> = members
            .into_iter()
            .filter(|m| !m.is_self && m.state == MemberState::Alive && m.addr.is_some())
            .collect();
        others.sort_by_key(|m| (Some(&m.placement.site) == my_site.as_ref(), m.id));
        others.first().map(|m| m.id)
    }
}
