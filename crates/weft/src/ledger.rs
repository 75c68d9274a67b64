//! `weft ledger`: the fabric's ledger as an account sees it — where it stands, the receipts of
//! work nodes did for the account, and `verify`, which checks all of it here, trusting the node
//! for nothing: the checkpoint's signature and cosignatures, its consistency with the last one
//! this machine saw (kept in the config dir), and every receipt's signature and inclusion.

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use weft_api::{ConsistencyProof, LedgerView, ReceiptProof};
use weft_core::NodeId;
use weft_ledger::{Receipt, Work};
use weft_tlog::{Checkpoint, Hash, Note, leaf_hash, verify_consistency, verify_inclusion};

use crate::account::{Actor, config_dir};

/// `weft ledger …`.
#[derive(Subcommand, Debug)]
pub enum LedgerCommand {
    /// Where the fabric's ledger stands on the node: its size, its newest cosigned
    /// checkpoint, the sequencer
    Status(Json),
    /// The receipts of work nodes did for your account, newest last
    Receipts(ReceiptsArgs),
    /// Check the ledger here: the checkpoint's signatures, its consistency with the one you
    /// saw before, and the inclusion of every receipt of your account
    Verify(Json),
    /// The work this node's receipts in the ledger add up to (its operator's view; `--data`
    /// names the node)
    Work(Json),
    /// Your account's credits: its allowance, the admin's grants, what its receipts cost and
    /// what its jobs under way hold
    Balance(Json),
    /// Your account's grants and charges, oldest first, with the balance after each
    History(ReceiptsArgs),
    /// Grant credits to an account (admin node only)
    Grant(GrantArgs),
}

/// `weft ledger grant`.
#[derive(Args, Debug)]
pub struct GrantArgs {
    /// The account (its id, as `weft account show` prints it)
    account: String,
    /// Credits (fractions allowed)
    credits: f64,
    /// Why
    #[arg(long, default_value = "")]
    memo: String,
}

/// `weft node …`: an operator's commands about their node.
#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// What this node earned: the credits its receipts in the ledger charged, with the work
    /// behind them and its prices (`--data` names the node)
    Earnings(Json),
}

/// Run a `weft node` command.
pub fn run_node(who: &Actor, cmd: NodeCommand) -> Result<()> {
    match cmd {
        NodeCommand::Earnings(j) => earnings(who, j.json),
    }
}

fn earnings(who: &Actor, json: bool) -> Result<()> {
    let done: weft_ledger::WorkDone =
        crate::ops::client(who.data.clone())?.get("/v1/ledger/work")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&done)?);
        return Ok(());
    }
    let c = |m: u64| weft_ledger::price::credits(i128::from(m));
    println!("node       {}", done.node);
    println!(
        "earned     {} credits from {} receipts in the ledger, for {} accounts",
        c(done.earned),
        done.receipts,
        done.accounts
    );
    println!(
        "  jobs       {} credits: {} runs, {} fuel",
        c(done.earned_jobs),
        done.jobs,
        done.fuel
    );
    println!(
        "  inference  {} credits: {} requests, {} tokens",
        c(done.earned_inference),
        done.requests,
        done.tokens_in.saturating_add(done.tokens_out)
    );
    println!(
        "  storage    {} credits: {:.3} GB-hours held",
        c(done.earned_storage),
        done.byte_hours as f64 / 1e9
    );
    println!(
        "  transfer   {} credits: {} served",
        c(done.earned_transfer),
        crate::ops::human_bytes(done.bytes_served)
    );
    if let Some(p) = done.prices {
        println!(
            "prices     {} per 10^9 fuel, {} per 1,000 tokens, {} per GB-month, {} per GB out",
            c(p.fuel_per_g),
            c(p.tokens_per_k),
            c(p.storage_gb_month),
            c(p.egress_gb)
        );
    }
    Ok(())
}

fn balance(who: &Actor, json: bool) -> Result<()> {
    let b: weft_ledger::Balance = who.client(false, &[])?.get("/v1/ledger/balance")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&b)?);
        return Ok(());
    }
    let c = weft_ledger::price::credits;
    println!("account    {}", b.account);
    println!("balance    {} credits", c(b.balance()));
    println!("available  {} credits", c(b.available()));
    println!("  allowance  {}", c(i128::from(b.allowance)));
    println!("  granted    {}", c(i128::from(b.granted)));
    println!(
        "  spent      {} ({} receipts in the ledger)",
        c(i128::from(b.spent)),
        b.receipts
    );
    println!(
        "  held       {} (jobs under way, at their most)",
        c(i128::from(b.held))
    );
    if b.prepaid > 0 {
        println!(
            "  prepaid    {} (buckets' terms), of which their storage used {}",
            c(i128::from(b.prepaid)),
            c(i128::from(b.covered))
        );
    }
    Ok(())
}

fn history(who: &Actor, a: ReceiptsArgs) -> Result<()> {
    let lines: Vec<weft_api::HistoryLine> = who.client(false, &[])?.get("/v1/ledger/history")?;
    let b: weft_ledger::Balance = who.client(false, &[])?.get("/v1/ledger/balance")?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
        return Ok(());
    }
    let c = weft_ledger::price::credits;
    let mut running = i128::from(b.allowance);
    println!("{:>14}  allowance", c(running));
    let start = lines.len().saturating_sub(a.last);
    let mut table: Vec<[String; 4]> = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        running += l.amount;
        if i < start {
            continue;
        }
        let who = l.node.as_deref().map_or(String::new(), |n| {
            format!(" by {}", n.get(..12).unwrap_or(n))
        });
        table.push([
            format!("{:+}", l.amount as f64 / 1e6),
            c(running),
            l.kind.clone(),
            format!("{}{who}", l.what),
        ]);
    }
    if start > 0 {
        println!("  … {start} earlier lines");
    }
    for [amount, after, kind, what] in table {
        println!("{after:>14}  {amount:>12}  {kind:<9}  {what}");
    }
    Ok(())
}

fn grant(who: &Actor, a: GrantArgs) -> Result<()> {
    let answer: weft_api::GrantAnswer = crate::ops::client(who.data.clone())?.post(
        "/v1/ledger/grants",
        &weft_api::GrantRequest {
            account: a.account,
            credits: a.credits,
            memo: a.memo,
        },
    )?;
    println!(
        "granted {} credits to account {} (grant {})",
        weft_ledger::price::credits(i128::from(answer.micro)),
        answer.account,
        answer.id
    );
    Ok(())
}

/// `--json`.
#[derive(Args, Debug)]
pub struct Json {
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// `weft ledger receipts`.
#[derive(Args, Debug)]
pub struct ReceiptsArgs {
    /// Show the last N
    #[arg(long, default_value_t = 20)]
    last: usize,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// Run a `weft ledger` command.
pub fn run(who: &Actor, cmd: LedgerCommand) -> Result<()> {
    match cmd {
        LedgerCommand::Status(j) => status(who, j.json),
        LedgerCommand::Receipts(a) => receipts(who, a),
        LedgerCommand::Verify(j) => verify(who, j.json),
        LedgerCommand::Work(j) => work(who, j.json),
        LedgerCommand::Balance(j) => balance(who, j.json),
        LedgerCommand::History(a) => history(who, a),
        LedgerCommand::Grant(a) => grant(who, a),
    }
}

fn work(who: &Actor, json: bool) -> Result<()> {
    let done: weft_ledger::WorkDone =
        crate::ops::client(who.data.clone())?.get("/v1/ledger/work")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&done)?);
        return Ok(());
    }
    println!("node       {}", done.node);
    println!(
        "receipts   {} in the ledger, for {} accounts",
        done.receipts, done.accounts
    );
    println!(
        "jobs       {} run to their end: fuel {}, read {}, wrote {}, {:.1} s",
        done.jobs,
        done.fuel,
        crate::ops::human_bytes(done.bytes_in),
        crate::ops::human_bytes(done.bytes_out),
        done.wall_ms as f64 / 1000.0
    );
    println!(
        "inference  {} requests answered: {} tokens in, {} out",
        done.requests, done.tokens_in, done.tokens_out
    );
    Ok(())
}

fn status(who: &Actor, json: bool) -> Result<()> {
    let view: LedgerView = who.client(false, &[])?.get("/v1/ledger")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    let s = &view.status;
    println!("origin     {}", s.origin);
    println!(
        "entries    {} cosigned by a quorum ({} on the branch this node follows)",
        s.size, s.staged
    );
    println!(
        "sequencer  {}",
        s.sequencer.map_or("none alive".to_string(), |n| n.short())
    );
    println!(
        "this node  issued {} receipts, {} in the ledger",
        s.issued, s.included
    );
    if let Some(note) = view.checkpoint {
        println!("checkpoint");
        for line in note.lines() {
            println!("  {line}");
        }
    }
    Ok(())
}

/// A receipt the node answered, read (its signature checked) and its proof decoded.
struct Proven {
    receipt: Receipt,
    index: u64,
    proof: Vec<Hash>,
    checkpoint: String,
}

/// Every receipt of the account in the node's newest cosigned checkpoint.
fn all_receipts(who: &Actor) -> Result<Vec<Proven>> {
    let api = who.client(false, &[])?;
    let mut out = Vec::new();
    loop {
        let page: Vec<ReceiptProof> =
            api.get(&format!("/v1/ledger/receipts?skip={}&max=1000", out.len()))?;
        let n = page.len();
        for p in page {
            let entry = bytes_of(&p.entry)?;
            let receipt = Receipt::from_entry(&entry)
                .map_err(|e| anyhow!("receipt #{} from the node: {e}", p.index))?;
            out.push(Proven {
                receipt,
                index: p.index,
                proof: p.proof.iter().map(|h| hash_of(h)).collect::<Result<_>>()?,
                checkpoint: p.checkpoint,
            });
        }
        if n < 1000 {
            return Ok(out);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A receipt as JSON for people and scripts: ids and hashes in hex.
fn receipt_json(p: &Proven) -> serde_json::Value {
    let b = &p.receipt.body;
    let work = match &b.work {
        Work::Job {
            job,
            attempt,
            module,
            result,
            fuel,
            bytes_in,
            bytes_out,
            wall_ms,
            exit,
        } => serde_json::json!({"job": {
            "id": job, "attempt": attempt, "module": module.to_hex(), "result": result.to_hex(),
            "fuel": fuel, "bytes_in": bytes_in, "bytes_out": bytes_out, "wall_ms": wall_ms,
            "exit": exit,
        }}),
        Work::Storage {
            bucket,
            byte_hours,
            audits,
        } => {
            serde_json::json!({"storage": {"bucket": bucket, "byte_hours": byte_hours, "audits": audits}})
        }
        Work::Inference {
            model,
            tokens_in,
            tokens_out,
        } => serde_json::json!({"inference": {
            "model": model, "tokens_in": tokens_in, "tokens_out": tokens_out,
        }}),
        Work::Transfer { bytes } => serde_json::json!({"transfer": {"bytes": bytes}}),
    };
    serde_json::json!({
        "index": p.index,
        "node": b.node.to_hex(),
        "seq": b.seq,
        "at_ms": b.at_ms,
        "account": b.account.to_hex(),
        "request": b.request.to_hex(),
        "work": work,
        "hash": p.receipt.hash().to_hex(),
        "signature": hex(&p.receipt.signature.0),
    })
}

fn describe(work: &Work) -> String {
    match work {
        Work::Job {
            job,
            attempt,
            fuel,
            bytes_in,
            bytes_out,
            wall_ms,
            exit,
            ..
        } => format!(
            "job {job} (attempt {attempt}): fuel {fuel}, read {}, wrote {}, {wall_ms} ms, exit {}",
            crate::ops::human_bytes(*bytes_in),
            crate::ops::human_bytes(*bytes_out),
            exit.map_or("-".to_string(), |e| e.to_string())
        ),
        Work::Storage {
            bucket,
            byte_hours,
            audits,
        } => {
            format!("storage of {bucket}: {byte_hours} byte-hours, {audits} audits passed")
        }
        Work::Inference {
            model,
            tokens_in,
            tokens_out,
        } => format!("inference with {model}: {tokens_in} tokens in, {tokens_out} out"),
        Work::Transfer { bytes } => format!("transfer: {}", crate::ops::human_bytes(*bytes)),
    }
}

fn receipts(who: &Actor, args: ReceiptsArgs) -> Result<()> {
    let all = all_receipts(who)?;
    let shown = &all[all.len().saturating_sub(args.last)..];
    if args.json {
        let shown: Vec<serde_json::Value> = shown.iter().map(receipt_json).collect();
        println!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(());
    }
    if all.is_empty() {
        println!("no receipts for this account in the ledger yet");
        return Ok(());
    }
    println!("{} receipts; the last {}:", all.len(), shown.len());
    for r in shown {
        println!(
            "  #{:<8} node {} · {}",
            r.index,
            r.receipt.body.node.short(),
            describe(&r.receipt.body.work)
        );
    }
    Ok(())
}

/// What `weft ledger verify` found.
#[derive(Debug, serde::Serialize)]
struct Verdict {
    size: u64,
    signer: String,
    cosigners: usize,
    quorum: usize,
    members: usize,
    previous: Option<u64>,
    receipts: usize,
}

fn parse_id(hex: &str) -> Result<NodeId> {
    hex.parse()
        .map_err(|e| anyhow!("a member id from the node: {e}"))
}

/// The node's newest cosigned checkpoint, checked here: signed by a member, cosigned by a
/// quorum of the others, and consistent with the checkpoint this machine saw before.
pub(crate) struct Checked {
    pub(crate) note: String,
    pub(crate) origin: String,
    pub(crate) members: Vec<NodeId>,
    pub(crate) verified: weft_ledger::Verified,
    /// The size of the checkpoint seen before, if one was.
    pub(crate) previous: Option<u64>,
    /// Where the newest checkpoint seen is kept, and whether this one is to replace it.
    file: std::path::PathBuf,
    newer: bool,
}

impl Checked {
    /// Keep this checkpoint as the one seen (unless an older one than seen before).
    pub(crate) fn remember(&self) -> Result<()> {
        if self.newer {
            if let Some(dir) = self.file.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(&self.file, &self.note)
                .with_context(|| format!("writing {}", self.file.display()))?;
        }
        Ok(())
    }
}

/// Check the node's checkpoint as [`Checked`] says.
pub(crate) fn check_checkpoint(api: &weft_api::ApiClient, json: bool) -> Result<Checked> {
    let view: LedgerView = api.get("/v1/ledger")?;
    let origin = view.status.origin.clone();
    let note = view.checkpoint.ok_or_else(|| {
        anyhow!("the ledger has no cosigned checkpoint yet on this node; try again shortly")
    })?;
    let members: Vec<NodeId> = view
        .members
        .iter()
        .map(|m| parse_id(m))
        .collect::<Result<_>>()?;
    let verified = weft_ledger::verify_checkpoint(&note, &origin, &members).ok_or_else(|| {
        anyhow!(
            "the node's checkpoint is not signed by a member and cosigned by more than half of the others: do not trust what this node says of the ledger"
        )
    })?;
    let cp = &verified.checkpoint;
    // The checkpoint seen before, from this machine.
    let file = config_dir().join("ledger").join(format!(
        "{}.checkpoint",
        &weft_core::ContentHash::of(origin.as_bytes()).to_hex()[..16]
    ));
    let previous = match std::fs::read_to_string(&file) {
        Ok(text) => Some(
            Note::parse(&text)
                .ok()
                .and_then(|n| Checkpoint::parse(&n.text).ok())
                .ok_or_else(|| anyhow!("{} is not a checkpoint", file.display()))?,
        ),
        Err(_) => None,
    };
    if let Some(prev) = &previous {
        if prev.size <= cp.size {
            let proof: ConsistencyProof = api.get(&format!(
                "/v1/ledger/consistency?old={}&new={}",
                prev.size, cp.size
            ))?;
            let proof = proof
                .proof
                .iter()
                .map(|h| hash_of(h))
                .collect::<Result<Vec<_>>>()?;
            if !verify_consistency(prev.size, cp.size, &prev.root, &cp.root, &proof) {
                bail!(
                    "the ledger's history changed: its checkpoint of size {} does not extend the one of size {} you saw before (kept in {}); keep both as evidence",
                    cp.size,
                    prev.size,
                    file.display()
                );
            }
        } else if !json {
            println!(
                "note: this node's checkpoint (size {}) is older than the one you saw before (size {}); not compared",
                cp.size, prev.size
            );
        }
    }
    let newer = previous.as_ref().is_none_or(|p| p.size <= cp.size);
    Ok(Checked {
        note,
        origin,
        members,
        previous: previous.map(|p| p.size),
        verified,
        file,
        newer,
    })
}

/// Check every receipt of the account the node answers: the account's own, signed by its
/// node, included in a checkpoint that verifies.
pub(crate) fn checked_receipts(who: &Actor, c: &Checked) -> Result<Vec<Receipt>> {
    let me = who.account_key()?.public();
    let cp = &c.verified.checkpoint;
    let receipts = all_receipts(who)?;
    for r in &receipts {
        if r.receipt.body.account != me {
            bail!(
                "the node answered a receipt of another account (#{})",
                r.index
            );
        }
        let checked = if r.checkpoint == c.note {
            cp.clone()
        } else {
            weft_ledger::verify_checkpoint(&r.checkpoint, &c.origin, &c.members)
                .ok_or_else(|| anyhow!("receipt #{}'s checkpoint does not verify", r.index))?
                .checkpoint
        };
        if !verify_inclusion(
            r.index,
            checked.size,
            &leaf_hash(&r.receipt.to_entry()),
            &r.proof,
            &checked.root,
        ) {
            bail!("receipt #{} is not in the ledger its proof names", r.index);
        }
    }
    Ok(receipts.into_iter().map(|p| p.receipt).collect())
}

fn verify(who: &Actor, json: bool) -> Result<()> {
    let api = who.client(false, &[])?;
    let checked = check_checkpoint(&api, json)?;
    let receipts = checked_receipts(who, &checked)?;
    checked.remember()?;
    let verified = &checked.verified;
    let cp = &verified.checkpoint;
    let members = &checked.members;
    let previous = checked.previous;
    let verdict = Verdict {
        size: cp.size,
        signer: verified.signer.to_hex(),
        cosigners: verified.cosigners.len(),
        quorum: verified.quorum,
        members: members.len(),
        previous,
        receipts: receipts.len(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&verdict)?);
        return Ok(());
    }
    println!(
        "checkpoint  size {}, signed by member {}, cosigned by {} of the other {} members ({} needed)",
        verdict.size,
        verified.signer.short(),
        verdict.cosigners,
        verdict.members.saturating_sub(1),
        verdict.quorum
    );
    match verdict.previous {
        Some(p) if p <= verdict.size => {
            println!("history     consistent with the checkpoint of size {p} you saw before")
        }
        Some(_) => {}
        None => println!("history     first check from this machine; kept for the next"),
    }
    println!(
        "receipts    {} of your account, each signed by its node and proven included",
        verdict.receipts
    );
    Ok(())
}

fn bytes_of(hex: &str) -> Result<Vec<u8>> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| anyhow!("the node answered bytes that are not hex"))
}

fn hash_of(hex: &str) -> Result<Hash> {
    let hash: weft_core::ContentHash = hex
        .parse()
        .map_err(|_| anyhow!("a proof hash that is not 64 hex digits"))?;
    Ok(Hash(hash.0))
}
