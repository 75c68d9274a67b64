//! `weft audit`: an auditor's check of the fabric for an account, done here. It walks the
//! whole ledger from its tiles (every entry a receipt its node signed, in its node's chain,
//! hashing to a checkpoint a quorum cosigned and consistent with the last one this machine
//! saw), checks the account's receipts, asks every holder of every shard of the account's
//! objects for a fresh storage proof (where they are, whether they hold it), and matches every
//! job the account paid for with its receipts. Any finding names what failed and the command
//! exits non-zero.

use anyhow::{Result, bail};
use clap::Args;
use weft_api::{
    AuditReport, JobAudit, ObjectsAudit, job_audit, object_findings, paid_job, url_escape,
};
use weft_ledger::audit::{JobProof, WalkSummary, prove_job, walk_bundles};

use crate::account::Actor;
use crate::ledger::{check_checkpoint, checked_receipts};

/// `weft audit`.
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Only this bucket's objects and jobs
    #[arg(long)]
    bucket: Option<String>,
    /// Print JSON instead of lines
    #[arg(long)]
    json: bool,
    /// Have the node audit its own copy of the ledger and your account (`GET /v1/audit`):
    /// quicker, but it trusts that node
    #[arg(long)]
    by_node: bool,
}

/// The audit's outcome, as `--json` prints it.
#[derive(serde::Serialize)]
struct Outcome {
    checkpoint_size: u64,
    previous_size: Option<u64>,
    ledger: Option<WalkSummary>,
    receipts: usize,
    charged_micro: u64,
    objects: usize,
    shards: usize,
    jobs: Vec<JobAudit>,
    findings: Vec<String>,
    passed: bool,
}

/// Walk the ledger's entries from the node's tiles up to the checked checkpoint.
fn walk(api: &weft_api::ApiClient, cp: &weft_tlog::Checkpoint) -> Result<WalkSummary, String> {
    walk_bundles(cp, |rel| {
        let mut bytes = Vec::new();
        api.download(&format!("/v1/ledger/{rel}"), &mut bytes)
            .map_err(|e| format!("reading the ledger's {rel}: {e}"))?;
        Ok(Some(bytes))
    })
}

/// `?bucket=…` when one is named.
fn bucket_query(a: &AuditArgs) -> String {
    a.bucket
        .as_ref()
        .map(|b| format!("?bucket={}", url_escape(b, b'/')))
        .unwrap_or_default()
}

/// `weft audit --by-node`: the node's own report.
fn by_node(api: &weft_api::ApiClient, a: &AuditArgs) -> Result<()> {
    let report: AuditReport = api.get(&format!("/v1/audit{}", bucket_query(a)))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if let Some(l) = &report.ledger {
            println!(
                "ledger      the node walked its copy: {} entries to its cosigned checkpoint",
                l.entries
            );
        }
        let shards: usize = report.objects.objects.iter().map(|o| o.shards.len()).sum();
        println!(
            "objects     {} objects, {shards} shards asked of their holders",
            report.objects.objects.len()
        );
        println!("jobs        {} that ran", report.jobs.len());
        for f in &report.findings {
            println!("FAILED      {f}");
        }
        if report.findings.is_empty() {
            println!("audit       passed (as the node sees it)");
        }
    }
    if !report.findings.is_empty() {
        bail!(
            "the node's audit failed: {} finding(s)",
            report.findings.len()
        );
    }
    Ok(())
}

/// `weft audit` of a fabric whose ledger is still empty: the account's objects, and no job
/// of it ended done longer ago than its receipts take to arrive.
fn audit_without_ledger(api: &weft_api::ApiClient, a: &AuditArgs) -> Result<()> {
    let objects: ObjectsAudit = api.get(&format!("/v1/audit/objects{}", bucket_query(a)))?;
    let mut findings: Vec<String> = objects.objects.iter().flat_map(object_findings).collect();
    let listed: Vec<weft_jobs::JobStatus> = api.get(&format!("/v1/jobs{}", bucket_query(a)))?;
    let now = weft_net::now_ms();
    for job in listed.iter().filter_map(paid_job) {
        if let JobProof::Missing(why) = prove_job(&job, &[], now) {
            findings.push(format!("job {}: {why}", job.id));
        }
    }
    let shards: usize = objects.objects.iter().map(|o| o.shards.len()).sum();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "ledger": null,
                "objects": objects.objects.len(),
                "shards": shards,
                "findings": findings,
                "passed": findings.is_empty(),
            })
        );
    } else {
        println!("ledger      empty: no receipts yet, nothing to walk");
        println!(
            "objects     {} objects, {shards} shards: each asked of its holder just now; regions checked against each bucket's",
            objects.objects.len()
        );
        for f in &findings {
            println!("FAILED      {f}");
        }
        if findings.is_empty() {
            println!("audit       passed");
        }
    }
    if !findings.is_empty() {
        bail!("the audit failed: {} finding(s)", findings.len());
    }
    Ok(())
}

/// Run `weft audit`.
pub fn run(who: &Actor, a: AuditArgs) -> Result<()> {
    let api = who.client(false, &[])?;
    if a.by_node {
        return by_node(&api, &a);
    }
    let mut findings = Vec::new();
    // A fabric whose ledger has no entry yet has no checkpoint: nothing to walk.
    let view: weft_api::LedgerView = api.get("/v1/ledger")?;
    if view.checkpoint.is_none() && view.status.size == 0 {
        return audit_without_ledger(&api, &a);
    }
    // The checkpoint: signed, cosigned, consistent with the one seen before (a changed
    // history stops the audit there).
    let checked = check_checkpoint(&api, a.json)?;
    let cp = checked.verified.checkpoint.clone();
    let ledger = match walk(&api, &cp) {
        Ok(summary) => Some(summary),
        Err(e) => {
            findings.push(e);
            None
        }
    };
    let receipts = checked_receipts(who, &checked)?;
    let charged: u64 = receipts.iter().map(|r| r.charge()).sum();
    // Objects: where each shard lives and a fresh proof it is held.
    let objects: ObjectsAudit = api.get(&format!("/v1/audit/objects{}", bucket_query(&a)))?;
    for o in &objects.objects {
        findings.extend(object_findings(o));
    }
    if objects.truncated {
        findings.push(
            "the node audited only part of the account's objects: audit bucket by bucket (--bucket)"
                .into(),
        );
    }
    // Jobs: every one that ran to its end is backed by receipts in the ledger.
    let listed: Vec<weft_jobs::JobStatus> = api.get(&format!("/v1/jobs{}", bucket_query(&a)))?;
    let now = weft_net::now_ms();
    let mut jobs = Vec::new();
    for j in &listed {
        let Some(paid) = paid_job(j) else { continue };
        let proof = prove_job(&paid, &receipts, now);
        if let JobProof::Missing(why) = &proof {
            findings.push(format!("job {}: {why}", paid.id));
        }
        jobs.push(job_audit(&paid.id, &proof));
    }
    // The checkpoint is kept as seen only when the walk proved it.
    if ledger.is_some() {
        checked.remember()?;
    }
    let shards: usize = objects.objects.iter().map(|o| o.shards.len()).sum();
    let outcome = Outcome {
        checkpoint_size: cp.size,
        previous_size: checked.previous,
        ledger,
        receipts: receipts.len(),
        charged_micro: charged,
        objects: objects.objects.len(),
        shards,
        jobs,
        passed: findings.is_empty(),
        findings,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        print(&outcome, &checked.verified);
    }
    if !outcome.passed {
        bail!(
            "the audit failed: {} finding(s){}",
            outcome.findings.len(),
            if a.json {
                String::new()
            } else {
                " (above)".into()
            }
        );
    }
    Ok(())
}

fn print(o: &Outcome, verified: &weft_ledger::Verified) {
    match &o.ledger {
        Some(l) => println!(
            "ledger      {} entries walked to the checkpoint signed by member {} and cosigned by {}: each a receipt its node signed, in its node's chain, all hashing to the checkpoint's root ({} nodes, {} accounts, {} credits charged in all)",
            l.entries,
            verified.signer.short(),
            verified.cosigners.len(),
            l.nodes,
            l.accounts,
            weft_ledger::price::credits(i128::from(l.charged))
        ),
        None => println!("ledger      FAILED (below)"),
    }
    match o.previous_size {
        Some(p) if p <= o.checkpoint_size => {
            println!("history     consistent with the checkpoint of size {p} you saw before")
        }
        Some(_) => {}
        None => println!("history     first audit from this machine; checkpoint kept for the next"),
    }
    println!(
        "receipts    {} of your account, each signed by its node and proven included; {} credits",
        o.receipts,
        weft_ledger::price::credits(i128::from(o.charged_micro))
    );
    println!(
        "objects     {} objects, {} shards: each asked of its holder just now; regions checked against each bucket's",
        o.objects, o.shards
    );
    let count = |v: &str| o.jobs.iter().filter(|j| j.verdict == v).count();
    println!(
        "jobs        {} that ran: {} backed by their receipts in the ledger, {} pending (ended within the last minute), {} not backed",
        o.jobs.len(),
        count("proven"),
        count("pending"),
        count("missing")
    );
    if o.passed {
        println!("audit       passed");
    } else {
        for f in &o.findings {
            println!("FAILED      {f}");
        }
    }
}
