//! The ledger's routes: where it stands, the caller's receipts with their proofs, and
//! consistency proofs between two sizes — everything `weft ledger verify` checks for itself.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;

use weft_tlog::Hash;

use crate::errors::ApiFailure;
use crate::state::{AppState, Caller};
use crate::{ConsistencyParams, ConsistencyProof, LedgerView, ReceiptProof, ReceiptsParams};

/// The most receipts one answer carries.
const RECEIPTS_MAX: usize = 1000;

pub(crate) async fn view(State(s): State<AppState>, _who: Caller) -> Json<LedgerView> {
    let ledger = s.node.ledger();
    Json(LedgerView {
        status: ledger.status(),
        checkpoint: ledger.checkpoint(),
        members: s
            .node
            .members()
            .iter()
            .filter(|m| {
                !matches!(
                    m.state,
                    weft_node::MemberState::Revoked | weft_node::MemberState::Left
                )
            })
            .map(|m| m.id.to_hex())
            .collect(),
    })
}

pub(crate) async fn receipts(
    State(s): State<AppState>,
    Caller(acting): Caller,
    Query(q): Query<ReceiptsParams>,
) -> Result<Json<Vec<ReceiptProof>>, ApiFailure> {
    let max = q.max.unwrap_or(RECEIPTS_MAX).min(RECEIPTS_MAX);
    let included = s
        .node
        .ledger()
        .receipts_for(&acting.account(), q.skip.unwrap_or(0), max)?;
    Ok(Json(
        included
            .into_iter()
            .map(|i| ReceiptProof {
                entry: i
                    .receipt
                    .to_entry()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
                index: i.index,
                proof: i.proof.iter().map(Hash::to_hex).collect(),
                checkpoint: i.checkpoint,
            })
            .collect(),
    ))
}

/// The work this node's receipts in the ledger add up to (operator).
pub(crate) async fn work(
    State(s): State<AppState>,
) -> Result<Json<weft_ledger::WorkDone>, ApiFailure> {
    Ok(Json(s.node.ledger().work_done(&s.node.id())?))
}

pub(crate) async fn consistency(
    State(s): State<AppState>,
    _who: Caller,
    Query(q): Query<ConsistencyParams>,
) -> Result<Json<ConsistencyProof>, ApiFailure> {
    let settled = s.node.ledger().status().size;
    if q.old > q.new || q.new > settled {
        return Err(ApiFailure(
            StatusCode::BAD_REQUEST,
            format!(
                "a consistency proof needs old <= new <= {settled} (this node's cosigned size)"
            ),
        ));
    }
    let proof = s.node.ledger().consistency(q.old, q.new)?;
    Ok(Json(ConsistencyProof {
        proof: proof.iter().map(Hash::to_hex).collect(),
    }))
}
