use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use weft_core::{Placement, Role};
use weft_node::{InviteRequest, Node};

use crate::errors::ApiFailure;
use crate::state::{AppState, Caller, authorize};
use crate::{InviteAnswer, InviteParams, RevokeParams};

/// Serve the API on `listener` until the node stops ([`Node::stopped`]), then let its
/// connections finish for up to 5 s. Every connection and body runs as a task of the node
/// ([`Node::spawn`]), so shutting the node down ends them; run this future itself with
/// [`Node::spawn_service`] so the node owns it too.
pub async fn serve(
    node: Node,
    listener: tokio::net::TcpListener,
    token: String,
) -> std::io::Result<()> {
    let state = AppState {
        node: node.clone(),
        token: token.into(),
    };
    // Operator commands need the node's token; data commands act as an account — the one a
    // session names, or (token only, for the node's own tools) the node's own account.
    let operator = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/invites", post(invite))
        .route("/v1/revoke", post(revoke))
        .route(
            "/v1/fabric/accounts",
            get(accounts_policy).put(set_accounts_policy),
        )
        .route(
            "/v1/fabric/accounts/{id}",
            axum::routing::put(admit_account).delete(dismiss_account),
        )
        .route("/v1/fabric/quotas", get(quotas))
        .route(
            "/v1/fabric/quotas/{who}",
            axum::routing::put(set_quota).delete(remove_quota),
        )
        .route("/v1/shutdown", post(shutdown))
        .route("/v1/repair", get(repair_status))
        .route("/v1/reputation", get(reputation))
        .route("/v1/ledger/prices", get(crate::ledger::prices))
        .route("/v1/ledger/work", get(crate::ledger::work))
        .route(
            "/v1/ledger/grants",
            axum::routing::post(crate::ledger::grant),
        )
        .route("/v1/repair/check", post(repair_check))
        .route("/v1/scrub", post(scrub))
        .route("/v1/wan", axum::routing::put(set_wan))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ));
    let data = Router::new()
        .route("/v1/nodes", get(nodes))
        .route("/v1/usage", get(crate::buckets::usage))
        .route("/v1/ledger", get(crate::ledger::view))
        .route("/v1/ledger/receipts", get(crate::ledger::receipts))
        .route("/v1/ledger/balance", get(crate::ledger::balance))
        .route("/v1/ledger/history", get(crate::ledger::history))
        .route("/v1/ledger/consistency", get(crate::ledger::consistency))
        .route("/v1/ledger/tile/{*path}", get(crate::audit::tile))
        .route("/v1/audit", get(crate::audit::report))
        .route("/v1/audit/objects", get(crate::audit::objects))
        .route("/v1/objects", post(crate::objects::put))
        .route("/v1/objects/{cap}", get(crate::objects::get))
        .route("/v1/objects/{cap}/manifest", get(crate::objects::stat))
        .route(
            "/v1/buckets",
            post(crate::buckets::create).get(crate::buckets::list_buckets),
        )
        .route(
            "/v1/buckets/{name}",
            get(crate::buckets::get_bucket).delete(crate::buckets::delete_bucket),
        )
        .route(
            "/v1/buckets/{name}/grants",
            post(crate::buckets::put_grant).get(crate::buckets::list_grants),
        )
        .route(
            "/v1/buckets/{name}/grants/{account}",
            axum::routing::delete(crate::buckets::revoke_grant),
        )
        .route("/v1/buckets/{name}/prepay", post(crate::ledger::prepay))
        .route(
            "/v1/buckets/{name}/grant",
            get(crate::buckets::grant_lookup),
        )
        .route(
            "/v1/versions/{bucket}/{*key}",
            get(crate::buckets::versions),
        )
        .route("/v1/b/{bucket}", get(crate::buckets::list_objects))
        .route(
            "/v1/b/{bucket}/{*key}",
            axum::routing::put(crate::buckets::put)
                .get(crate::buckets::get)
                .delete(crate::buckets::delete),
        )
        .route("/v1/share/{bucket}/{*key}", get(crate::buckets::share))
        .route("/v1/keys", post(crate::keys::create).get(crate::keys::list))
        .route("/v1/keys/{id}", axum::routing::delete(crate::keys::remove))
        .route("/v1/jobs", post(crate::jobs::submit).get(crate::jobs::list))
        .route("/v1/jobs/{bucket}/{id}", get(crate::jobs::status))
        .route("/v1/jobs/{bucket}/{id}/cancel", post(crate::jobs::cancel))
        .route("/v1/jobs/{bucket}/{id}/logs", get(crate::jobs::logs))
        .route(
            "/v1/models",
            post(crate::models::add).get(crate::models::list),
        )
        .route(
            "/v1/models/{name}",
            axum::routing::delete(crate::models::remove),
        )
        .route(
            "/v1/models/{name}/placement",
            axum::routing::put(crate::models::place),
        );
    let app = operator.merge(data).with_state(state);
    // Served with hyper directly rather than `axum::serve`, whose connection tasks nobody owns.
    let service = hyper_util::service::TowerToHyperService::new(app);
    // HTTP/1 only (the client is ureq), so hyper never spawns a task of its own.
    let mut http = ConnBuilder::new(TokioExecutor::new()).http1_only();
    http.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(weft_node::HTTP_HEADER_TIMEOUT);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    node.accept_until_stopped(listener, "API", |socket| {
        let conn = http.serve_connection(TokioIo::new(socket), service.clone());
        let conn = graceful.watch(conn.into_owned());
        async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = ?e, "API connection ended with an error");
            }
        }
    })
    .await;
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(5)) => {}
    }
    Ok(())
}

async fn status(State(s): State<AppState>) -> Json<weft_node::NodeStatus> {
    Json(s.node.status())
}

/// Members, for an account's session or the operator (not for anyone who reaches the API).
async fn nodes(State(s): State<AppState>, _who: Caller) -> Json<Vec<crate::MemberStatus>> {
    Json(
        s.node
            .members()
            .iter()
            .map(crate::MemberStatus::from)
            .collect(),
    )
}

async fn invite(
    State(s): State<AppState>,
    Json(p): Json<InviteParams>,
) -> Result<Json<InviteAnswer>, ApiFailure> {
    let roles = p
        .roles
        .iter()
        .map(|r| r.parse::<Role>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiFailure(StatusCode::BAD_REQUEST, e))?;
    let invite = s.node.invite(InviteRequest {
        placement: Placement {
            site: p.site,
            region: p.region,
            jurisdiction: p.jurisdiction,
        },
        roles,
        ttl: Duration::from_secs(p.ttl_secs),
    })?;
    Ok(Json(InviteAnswer {
        invite: invite.to_text(),
        expires_at: invite.body.expires_at,
    }))
}

async fn revoke(
    State(s): State<AppState>,
    Json(p): Json<RevokeParams>,
) -> Result<Json<RevokeParams>, ApiFailure> {
    let id = s.node.revoke(&p.node)?;
    Ok(Json(RevokeParams { node: id.to_hex() }))
}

async fn accounts_policy(
    State(s): State<AppState>,
) -> Result<Json<weft_node::AccountsPolicy>, ApiFailure> {
    Ok(Json(s.node.accounts_policy().await?))
}

async fn set_accounts_policy(
    State(s): State<AppState>,
    Json(p): Json<crate::AccountsParams>,
) -> Result<Json<weft_node::AccountsPolicy>, ApiFailure> {
    s.node.set_invite_only(p.invite_only).await?;
    Ok(Json(s.node.accounts_policy().await?))
}

async fn admit_account(
    state: State<AppState>,
    id: axum::extract::Path<String>,
) -> Result<Json<crate::AdmittedAccount>, ApiFailure> {
    set_admitted(state, id, true).await
}

async fn dismiss_account(
    state: State<AppState>,
    id: axum::extract::Path<String>,
) -> Result<Json<crate::AdmittedAccount>, ApiFailure> {
    set_admitted(state, id, false).await
}

async fn set_admitted(
    State(s): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    admitted: bool,
) -> Result<Json<crate::AdmittedAccount>, ApiFailure> {
    let id = s.node.admit_account(&id, admitted).await?;
    Ok(Json(crate::AdmittedAccount {
        account: id.to_hex(),
        admitted,
    }))
}

async fn quotas(State(s): State<AppState>) -> Result<Json<Vec<weft_node::QuotaEntry>>, ApiFailure> {
    Ok(Json(s.node.quotas().await?))
}

async fn set_quota(
    State(s): State<AppState>,
    axum::extract::Path(who): axum::extract::Path<String>,
    Json(q): Json<crate::QuotaParams>,
) -> Result<Json<weft_node::QuotaEntry>, ApiFailure> {
    let quota = weft_data::quota::AccountQuota {
        bytes: q.bytes,
        jobs: q.jobs,
        tokens_per_minute: q.tokens_per_minute,
        allowance: q.allowance,
        set_ms: 0,
    };
    let applies_to = s.node.set_quota(&who, Some(quota.clone())).await?;
    Ok(Json(weft_node::QuotaEntry::new(applies_to, Some(&quota))))
}

async fn remove_quota(
    State(s): State<AppState>,
    axum::extract::Path(who): axum::extract::Path<String>,
) -> Result<Json<weft_node::QuotaEntry>, ApiFailure> {
    let applies_to = s.node.set_quota(&who, None).await?;
    Ok(Json(weft_node::QuotaEntry::new(applies_to, None)))
}

async fn reputation(State(s): State<AppState>) -> Json<Vec<weft_node::Reputation>> {
    Json(s.node.reputation())
}

async fn repair_status(State(s): State<AppState>) -> Json<weft_node::HealStatus> {
    Json(s.node.repair_status())
}

async fn repair_check(State(s): State<AppState>) -> Json<weft_node::HealStatus> {
    Json(s.node.check_repair().await)
}

async fn scrub(State(s): State<AppState>) -> Json<weft_node::HealStatus> {
    Json(s.node.scrub().await)
}

async fn set_wan(
    State(s): State<AppState>,
    Json(p): Json<crate::WanParams>,
) -> Result<StatusCode, ApiFailure> {
    s.node
        .set_wan_links(&p.links, p.loss.as_deref())
        .map_err(|e| match e {
            weft_node::NodeError::Invalid(why) => ApiFailure(StatusCode::BAD_REQUEST, why),
            e => ApiFailure(
                StatusCode::CONFLICT,
                format!("{e} (start the node with a [wan] section to change its links at runtime)"),
            ),
        })?;
    Ok(StatusCode::NO_CONTENT)
}

async fn shutdown(State(s): State<AppState>) -> StatusCode {
    s.node.request_stop();
    StatusCode::ACCEPTED
}
