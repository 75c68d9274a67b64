//! The ledger's routes: where it stands, the caller's receipts with their proofs, and
//! consistency proofs between two sizes — everything `weft ledger verify` checks for itself.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use weft_tlog::Hash;

use crate::errors::ApiFailure;
use crate::state::{AppState, Caller};
use crate::{
    ConsistencyParams, ConsistencyProof, GrantAnswer, GrantRequest, HistoryLine, LedgerView,
    ReceiptProof, ReceiptsParams,
};

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

/// The caller's account's credits: allowance, grants, spending, and what its jobs under way
/// hold.
pub(crate) async fn balance(
    State(s): State<AppState>,
    Caller(acting): Caller,
) -> Result<Json<weft_ledger::Balance>, ApiFailure> {
    Ok(Json(balance_of(&s, &acting).await?))
}

/// `acting`'s balance: what its jobs under way hold, its allowance (the admin's quota, else
/// the default).
async fn balance_of(
    s: &AppState,
    acting: &weft_data::Acting,
) -> Result<weft_ledger::Balance, ApiFailure> {
    let (_, held) = s.node.jobs().held_by(acting).await?;
    let allowance = acting
        .quota()
        .await?
        .allowance
        .unwrap_or(weft_ledger::price::DEFAULT_ALLOWANCE);
    Ok(s.node
        .ledger()
        .balance(&acting.account(), held, allowance)
        .await?)
}

/// The caller's account's grants and charges, oldest first (receipts in the cosigned log).
pub(crate) async fn history(
    State(s): State<AppState>,
    Caller(acting): Caller,
) -> Result<Json<Vec<HistoryLine>>, ApiFailure> {
    let ledger = s.node.ledger();
    let account = acting.account();
    let mut lines: Vec<HistoryLine> = ledger
        .grants(&account)
        .await
        .map_err(weft_ledger::LedgerError::from)?
        .into_iter()
        .map(|(_, g)| HistoryLine {
            at_ms: g.at_ms,
            kind: "grant".into(),
            what: g.memo,
            amount: i128::from(g.amount),
            node: None,
            index: None,
        })
        .collect();
    let mut skip = 0;
    loop {
        let page = ledger.receipts_for(&account, skip, RECEIPTS_MAX)?;
        let n = page.len();
        for i in page {
            let r = i.receipt;
            let (kind, what) = match &r.body.work {
                weft_ledger::Work::Job { job, attempt, .. } => {
                    ("job", format!("{job} attempt {}", attempt + 1))
                }
                weft_ledger::Work::Inference {
                    model,
                    tokens_in,
                    tokens_out,
                } => (
                    "inference",
                    format!("{model}: {tokens_in} + {tokens_out} tokens"),
                ),
                weft_ledger::Work::Storage {
                    bucket, byte_hours, ..
                } => ("storage", format!("{bucket}: {byte_hours} byte-hours")),
                weft_ledger::Work::Transfer { bytes } => ("transfer", format!("{bytes} bytes")),
            };
            lines.push(HistoryLine {
                at_ms: r.body.at_ms,
                kind: kind.into(),
                what,
                amount: -i128::from(r.charge()),
                node: Some(r.body.node.to_hex()),
                index: Some(i.index),
            });
        }
        if n < RECEIPTS_MAX || lines.len() > 100_000 {
            break;
        }
        skip += n;
    }
    // Prepays leave the balance when made; their buckets' storage in their terms is paid from
    // them (in order, until used up), as the balance counts it.
    let prepays = ledger
        .prepays(&account)
        .await
        .map_err(weft_ledger::LedgerError::from)?;
    for p in &prepays {
        lines.push(HistoryLine {
            at_ms: p.from_ms,
            kind: "prepay".into(),
            what: format!(
                "{} for {} days",
                p.bucket,
                (p.until_ms - p.from_ms) / 86_400_000
            ),
            amount: -i128::from(p.amount),
            node: None,
            index: None,
        });
    }
    lines.sort_by_key(|l| l.at_ms);
    let mut pots: std::collections::HashMap<&str, (u64, u64, u64)> =
        std::collections::HashMap::new();
    for p in &prepays {
        let pot = pots.entry(p.bucket.as_str()).or_insert((u64::MAX, 0, 0));
        pot.0 = pot.0.min(p.from_ms);
        pot.1 = pot.1.max(p.until_ms);
        pot.2 = pot.2.saturating_add(p.amount);
    }
    for l in lines.iter_mut().filter(|l| l.kind == "storage") {
        let Some((bucket, _)) = l.what.split_once(": ") else {
            continue;
        };
        if let Some((from, until, left)) = pots.get_mut(bucket)
            && (*from..*until).contains(&l.at_ms)
            && *left > 0
        {
            let charge = u64::try_from(-l.amount).unwrap_or(0);
            let paid = charge.min(*left);
            *left -= paid;
            l.amount += i128::from(paid);
            l.what.push_str(" (paid from its prepay)");
        }
    }
    Ok(Json(lines))
}

/// Every node's published prices, by node id (hex).
pub(crate) async fn prices(
    State(s): State<AppState>,
) -> Json<std::collections::HashMap<String, weft_ledger::Prices>> {
    Json(
        s.node
            .ledger()
            .price_lists()
            .await
            .into_iter()
            .map(|(id, p)| (id.to_hex(), p))
            .collect(),
    )
}

/// Grant credits to an account (operator, admin node).
pub(crate) async fn grant(
    State(s): State<AppState>,
    Json(g): Json<GrantRequest>,
) -> Result<Json<GrantAnswer>, ApiFailure> {
    if !(g.credits.is_finite() && g.credits > 0.0 && g.credits <= 1e12) {
        return Err(ApiFailure(
            StatusCode::BAD_REQUEST,
            format!("{} credits: more than 0, at most 10^12", g.credits),
        ));
    }
    let micro = (g.credits * weft_ledger::price::MICRO as f64).round() as u64;
    let (account, id) = s.node.grant_credits(&g.account, micro, &g.memo).await?;
    Ok(Json(GrantAnswer {
        account: account.to_hex(),
        id,
        micro,
    }))
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

/// `POST /v1/buckets/{name}/prepay` body: credits set aside for the bucket, for how long.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PrepayRequest {
    /// Credits (fractions allowed, to the micro-credit).
    pub credits: f64,
    /// Days the term lasts, from now.
    pub days: u32,
}

/// The longest term a prepay may have, days (a century).
const PREPAY_DAYS_MAX: u32 = 36_500;

/// `POST /v1/buckets/{name}/prepay`: set credits aside for one of the caller's buckets; its
/// storage is paid from them and its objects are kept until the term ends.
pub(crate) async fn prepay(
    State(s): State<AppState>,
    Caller(acting): Caller,
    Path(name): Path<String>,
    Json(req): Json<PrepayRequest>,
) -> Result<Json<weft_ledger::prepay::Prepay>, ApiFailure> {
    let bad = |why: String| ApiFailure(StatusCode::BAD_REQUEST, why);
    if !(req.credits.is_finite() && req.credits > 0.0 && req.credits <= 1e12) {
        return Err(bad(format!(
            "credits {}: more than 0, at most 10^12",
            req.credits
        )));
    }
    if req.days == 0 || req.days > PREPAY_DAYS_MAX {
        return Err(bad(format!(
            "days {}: from 1 to {PREPAY_DAYS_MAX}",
            req.days
        )));
    }
    let bucket = acting.authorize(&name, weft_data::Need::Write).await?;
    let account = acting.account();
    if bucket.owner != account {
        return Err(ApiFailure(
            StatusCode::FORBIDDEN,
            format!("only the owner of bucket {name} can prepay it"),
        ));
    }
    let amount = (req.credits * weft_ledger::price::MICRO as f64).round() as u64;
    let ledger = s.node.ledger();
    let balance = balance_of(&s, &acting).await?;
    if balance.available() < i128::from(amount) {
        return Err(ApiFailure(
            StatusCode::PAYMENT_REQUIRED,
            format!(
                "account {} has {} credits available; prepaying {name} needs {}",
                account.short(),
                weft_ledger::price::credits(balance.available()),
                weft_ledger::price::credits(i128::from(amount))
            ),
        ));
    }
    let now = crate::state::now_ms();
    let prepay = weft_ledger::prepay::Prepay {
        bucket: name,
        amount,
        from_ms: now,
        until_ms: now + u64::from(req.days) * 86_400_000,
    };
    let signer = acting.signer()?;
    ledger
        .prepay(signer, &account, &prepay)
        .await
        .map_err(|e| ApiFailure(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    // Held on this node at once; other nodes read it within 3 s.
    acting.forget_prepays(&account);
    Ok(Json(prepay))
}
