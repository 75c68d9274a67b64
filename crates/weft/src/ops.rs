//! Operator commands that talk to a running node's API: status, nodes, invite, revoke.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use weft_api::MemberStatus;
use weft_api::{ApiClient, InviteAnswer, InviteParams, RevokeParams};
use weft_node::NodeStatus;

use crate::node_cmd::PlacementArgs;

/// `weft invite`.
#[derive(Args, Debug)]
pub struct InviteArgs {
    #[command(flatten)]
    placement: PlacementArgs,
    /// Roles, comma separated (storage, compute, inference) [default: storage,compute]
    #[arg(long, value_delimiter = ',')]
    roles: Vec<String>,
    /// How long the invite stays valid (e.g. 30m, 24h, 7d)
    #[arg(long, default_value = "24h")]
    ttl: humantime::Duration,
}

/// `weft revoke`.
#[derive(Args, Debug)]
pub struct RevokeArgs {
    /// Node id or a unique prefix of it (as `weft nodes` shows)
    node: String,
}

/// `weft fabric`.
#[derive(clap::Subcommand, Debug)]
pub enum FabricCommand {
    /// Show, or set, who may use the fabric: any account (--open, the default) or only the
    /// accounts its admin admitted (--invite-only)
    Accounts(AccountsArgs),
    /// Admit an account to an invite-only fabric (its id, as `weft account show` prints it)
    Admit {
        /// Account id (64 hex digits)
        account: String,
    },
    /// Dismiss an account: it stops acting on buckets on every node within seconds
    Dismiss {
        /// Account id (64 hex digits)
        account: String,
    },
    /// Show the quotas, or set one: the default every account has, or one account's own
    /// (bytes stored, jobs queued or running, AI tokens per minute, free credits), in open and
    /// invite-only fabrics alike
    Quota(QuotaArgs),
}

/// `weft fabric quota`.
#[derive(Args, Debug)]
pub struct QuotaArgs {
    /// `default`, or an account id (64 hex digits); omitted: list every quota
    applies_to: Option<String>,
    /// Bytes the account may store (e.g. 500MB, 10GiB; `none`: no limit)
    #[arg(long, value_parser = parse_limit)]
    bytes: Option<Limit>,
    /// Jobs the account may have queued or running at once (`none`: no limit)
    #[arg(long, value_parser = parse_limit)]
    jobs: Option<Limit>,
    /// AI tokens (prompt and generated) the account may use in any minute, every node
    /// counting the ledger's receipts (`none`: no limit)
    #[arg(long, value_parser = parse_limit)]
    tokens_per_minute: Option<Limit>,
    /// The account's free allowance of credits (fractions allowed; `default`: the fabric's,
    /// 10,000)
    #[arg(long, value_parser = parse_allowance)]
    allowance: Option<Allowance>,
    /// Remove this quota (an account then has the default)
    #[arg(long, conflicts_with_all = ["bytes", "jobs", "tokens_per_minute", "allowance"])]
    clear: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// An allowance on the command line: credits, or the fabric's default.
#[derive(Clone, Copy, Debug)]
struct Allowance(Option<u64>);

fn parse_allowance(text: &str) -> Result<Allowance, String> {
    if text.eq_ignore_ascii_case("default") {
        return Ok(Allowance(None));
    }
    let credits: f64 = text
        .parse()
        .map_err(|_| format!("{text:?}: credits (e.g. 500 or 0.25), or `default`"))?;
    if !(0.0..=1e12).contains(&credits) {
        return Err(format!("{text:?}: credits from 0 to 10^12"));
    }
    Ok(Allowance(Some(
        (credits * weft_ledger::price::MICRO as f64).round() as u64,
    )))
}

/// A limit on the command line: a number, or none.
#[derive(Clone, Copy, Debug)]
pub struct Limit(Option<u64>);

fn parse_limit(text: &str) -> Result<Limit, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("none") {
        return Ok(Limit(None));
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().map_err(|_| {
        format!("{text:?}: a number, optionally with a unit (500MB, 10GiB), or none")
    })?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
            ));
        }
    };
    let value = number * scale as f64;
    if !value.is_finite() || value < 0.0 || value > u64::MAX as f64 {
        return Err(format!("{text:?}: out of range"));
    }
    Ok(Limit(Some(value.round() as u64)))
}

/// `bytes` for people: `1.5 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn show_quota(q: &weft_node::QuotaEntry) -> String {
    let bytes = q.bytes.map_or("no limit".to_string(), human_bytes);
    let jobs = q.jobs.map_or("no limit".to_string(), |j| j.to_string());
    let tokens = q
        .tokens_per_minute
        .map_or("no limit".to_string(), |t| t.to_string());
    let allowance = q.allowance.map_or("the default".to_string(), |a| {
        weft_ledger::price::credits(i128::from(a))
    });
    format!(
        "{:<16} bytes stored: {bytes}; jobs queued or running: {jobs}; AI tokens per minute: {tokens}; free credits: {allowance}",
        short_who(&q.applies_to)
    )
}

fn short_who(who: &str) -> String {
    if who.len() == 64 {
        format!("{}…", &who[..12])
    } else {
        who.to_string()
    }
}

/// `weft fabric accounts`.
#[derive(Args, Debug)]
pub struct AccountsArgs {
    /// Only accounts the admin admitted may act on buckets
    #[arg(long, conflicts_with = "open")]
    invite_only: bool,
    /// Any account may act on buckets
    #[arg(long)]
    open: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// `weft fabric ...`.
pub fn fabric(data: Option<PathBuf>, cmd: FabricCommand) -> Result<()> {
    let api = client(data)?;
    match cmd {
        FabricCommand::Accounts(a) => {
            let policy: weft_node::AccountsPolicy = if a.invite_only || a.open {
                api.put_json_answer(
                    "/v1/fabric/accounts",
                    &weft_api::AccountsParams {
                        invite_only: a.invite_only,
                    },
                )?
            } else {
                api.get("/v1/fabric/accounts")?
            };
            if a.json {
                println!("{}", serde_json::to_string_pretty(&policy)?);
                return Ok(());
            }
            if policy.invite_only {
                println!(
                    "accounts: invite-only ({} admitted; `weft fabric admit ID` adds one)",
                    policy.admitted.len()
                );
            } else {
                println!("accounts: open (any account may use the fabric)");
            }
            for id in &policy.admitted {
                println!("  admitted {id}");
            }
        }
        FabricCommand::Admit { account } => {
            let done: weft_api::AdmittedAccount =
                api.put_json_answer(&format!("/v1/fabric/accounts/{}", account.trim()), &())?;
            println!("admitted account {}", done.account);
        }
        FabricCommand::Quota(q) => quota(&api, q)?,
        FabricCommand::Dismiss { account } => {
            api.delete(&format!("/v1/fabric/accounts/{}", account.trim()))?;
            println!(
                "dismissed account {}; it stops acting on buckets on every node within seconds",
                account.trim()
            );
        }
    }
    Ok(())
}

fn quota(api: &ApiClient, q: QuotaArgs) -> Result<()> {
    let Some(who) = q.applies_to else {
        if q.bytes.is_some()
            || q.jobs.is_some()
            || q.tokens_per_minute.is_some()
            || q.allowance.is_some()
            || q.clear
        {
            bail!("say whose quota to set: `default`, or an account id");
        }
        let all: Vec<weft_node::QuotaEntry> = api.get("/v1/fabric/quotas")?;
        if q.json {
            println!("{}", serde_json::to_string_pretty(&all)?);
        } else if all.is_empty() {
            println!("no quotas: every account may store and run without limit");
        } else {
            for e in &all {
                println!("{}", show_quota(e));
            }
        }
        return Ok(());
    };
    let who = who.trim().to_string();
    let path = format!("/v1/fabric/quotas/{who}");
    let done: weft_node::QuotaEntry = if q.clear {
        api.delete(&path)?;
        weft_node::QuotaEntry::new(who.clone(), None)
    } else {
        // Set what is given; keep what is not.
        let all: Vec<weft_node::QuotaEntry> = api.get("/v1/fabric/quotas")?;
        let current = all
            .iter()
            .find(|e| e.applies_to == who.to_ascii_lowercase());
        let bytes = match q.bytes {
            Some(Limit(b)) => b,
            None => current.and_then(|e| e.bytes),
        };
        let jobs = match q.jobs {
            Some(Limit(Some(j))) => Some(
                u32::try_from(j)
                    .map_err(|_| anyhow::anyhow!("--jobs {j}: at most {}", u32::MAX))?,
            ),
            Some(Limit(None)) => None,
            None => current.and_then(|e| e.jobs),
        };
        let tokens_per_minute = match q.tokens_per_minute {
            Some(Limit(t)) => t,
            None => current.and_then(|e| e.tokens_per_minute),
        };
        let allowance = match q.allowance {
            Some(Allowance(a)) => a,
            None => current.and_then(|e| e.allowance),
        };
        if q.bytes.is_none()
            && q.jobs.is_none()
            && q.tokens_per_minute.is_none()
            && q.allowance.is_none()
        {
            let shown = current
                .cloned()
                .unwrap_or(weft_node::QuotaEntry::new(who.clone(), None));
            if q.json {
                println!("{}", serde_json::to_string_pretty(&shown)?);
            } else {
                println!("{}", show_quota(&shown));
            }
            return Ok(());
        }
        api.put_json_answer(
            &path,
            &weft_api::QuotaParams {
                bytes,
                jobs,
                tokens_per_minute,
                allowance,
            },
        )?
    };
    if q.json {
        println!("{}", serde_json::to_string_pretty(&done)?);
    } else if q.clear {
        println!("quota of {} removed", short_who(&done.applies_to));
    } else {
        println!("{}", show_quota(&done));
    }
    Ok(())
}

/// The data directory a command without `--data` talks to: the default node's, else the first
/// node of the default local fabric.
pub fn resolved_data_dir(data: Option<PathBuf>) -> PathBuf {
    if let Some(dir) = data {
        return dir;
    }
    let default = crate::default_data_dir();
    if default.join(weft_api::API_ADDR_FILE).exists() {
        return default;
    }
    let local = crate::local::default_dir().join("node1");
    if local.join(weft_api::API_ADDR_FILE).exists() {
        local
    } else {
        default
    }
}

/// The client for the node the user means: `--data`, else the default node, else node1 of the
/// default local fabric (so `weft nodes` works right after `weft up`).
pub fn client(data: Option<PathBuf>) -> Result<ApiClient> {
    if let Some(dir) = data {
        return Ok(ApiClient::for_data_dir(&dir)?);
    }
    let default = crate::default_data_dir();
    match ApiClient::for_data_dir(&default) {
        Ok(c) => Ok(c),
        Err(e) => {
            let local = crate::local::default_dir().join("node1");
            ApiClient::for_data_dir(&local).map_err(|_| e.into())
        }
    }
}

/// `weft status`.
pub fn status(data: Option<PathBuf>, json: bool) -> Result<()> {
    let s: NodeStatus = client(data)?.get("/v1/status")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!("node         {} ({})", s.short_id, s.id);
    println!("fabric       {}", s.fabric);
    println!(
        "placement    site {} · region {} · jurisdiction {}",
        dash(&s.site),
        dash(&s.region),
        dash(&s.jurisdiction)
    );
    println!(
        "roles        {}{}",
        s.roles.join(", "),
        if s.admin { " (holds admin key)" } else { "" }
    );
    println!("address      {}", s.addr);
    println!("uptime       {}", human_secs(s.uptime_secs));
    println!(
        "members      {} alive, {} suspect, {} dead, {} revoked",
        s.alive, s.suspect, s.dead, s.revoked
    );
    println!(
        "memory       {:.1} MiB resident",
        s.rss_bytes as f64 / (1 << 20) as f64
    );
    if s.wan_delayed + s.wan_dropped > 0 {
        println!(
            "wan emulation {} datagrams delayed, {} dropped",
            s.wan_delayed, s.wan_dropped
        );
    }
    println!("version      {}", s.version);
    Ok(())
}

/// `weft nodes`.
pub fn nodes(data: Option<PathBuf>, json: bool) -> Result<()> {
    let api = client(data)?;
    let rows: Vec<MemberStatus> = api.get("/v1/nodes")?;
    let reps: Vec<weft_node::Reputation> = api.get("/v1/reputation").unwrap_or_default();
    if json {
        let mut out = serde_json::to_value(&rows)?;
        if let Some(list) = out.as_array_mut() {
            for row in list {
                let id = row["id"].as_str().unwrap_or_default().to_string();
                if let Some(r) = reps.iter().find(|r| r.node == id) {
                    row["reputation"] = serde_json::to_value(r)?;
                }
            }
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let audits: std::collections::HashMap<String, String> = reps
        .into_iter()
        .map(|r| {
            let mut text = if r.audits == 0 {
                "-".to_string()
            } else {
                format!("{:.0}% of {}", r.audit_score * 100.0, r.audits)
            };
            if r.availability < 1.0 {
                text.push_str(&format!(", up {:.0}%", r.availability * 100.0));
            }
            if r.wrong_results > 0 {
                text.push_str(&format!(", {} wrong results", r.wrong_results));
            }
            if r.score < 1.0 {
                text.push_str(&format!(", rep {:.2}", r.score));
            }
            if r.quarantined {
                text.push_str(" QUARANTINED");
            }
            (r.node, text)
        })
        .collect();
    let prices: std::collections::HashMap<String, weft_ledger::Prices> =
        api.get("/v1/ledger/prices").unwrap_or_default();
    let prices = prices
        .into_iter()
        .map(|(id, p)| {
            let c = |m: u64| weft_ledger::price::credits(i128::from(m));
            (
                id,
                format!("{}/Gfuel {}/ktok", c(p.fuel_per_g), c(p.tokens_per_k)),
            )
        })
        .collect();
    print!("{}", nodes_table(&rows, &audits, &prices));
    Ok(())
}

/// Render the nodes table.
pub fn nodes_table(
    rows: &[MemberStatus],
    audits: &std::collections::HashMap<String, String>,
    prices: &std::collections::HashMap<String, String>,
) -> String {
    let header = [
        "NODE", "SITE", "REGION", "JUR", "STATE", "UPTIME", "EST RTT", "RTT", "AUDITS", "PRICE",
        "ADDRESS",
    ];
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for m in rows {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}ms"));
        table.push(vec![
            format!("{}{}", m.short_id, if m.is_self { "*" } else { "" }),
            dash(&m.site).to_string(),
            dash(&m.region).to_string(),
            dash(&m.jurisdiction).to_string(),
            m.state.as_str().to_string(),
            m.uptime_secs.map_or("-".to_string(), human_secs),
            if m.is_self {
                "-".into()
            } else {
                ms(m.est_rtt_ms)
            },
            if m.is_self {
                "-".into()
            } else {
                ms(m.measured_rtt_ms)
            },
            audits.get(&m.id).cloned().unwrap_or_else(|| "-".into()),
            prices.get(&m.id).cloned().unwrap_or_else(|| "-".into()),
            m.addr.map_or("-".to_string(), |a| a.to_string()),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| table.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str(
        "(* = the node answering; EST RTT from network coordinates, RTT measured by probes;\n AUDITS = share of recent storage proofs passed, over all auditors, and of checks it was up,\n proven wrong results and the one reputation score; PRICE = credits per 10^9 fuel and per 1,000 tokens)\n",
    );
    out
}

/// `weft invite`.
pub fn invite(data: Option<PathBuf>, args: InviteArgs) -> Result<()> {
    let ttl: Duration = args.ttl.into();
    if ttl.is_zero() {
        bail!("--ttl must be positive");
    }
    let params = InviteParams {
        site: args.placement.site.unwrap_or_default(),
        region: args.placement.region.unwrap_or_default(),
        jurisdiction: args
            .placement
            .jurisdiction
            .unwrap_or_default()
            .to_ascii_uppercase(),
        roles: args.roles,
        ttl_secs: ttl.as_secs().max(1),
    };
    let answer: InviteAnswer = client(data)?.post("/v1/invites", &params)?;
    println!("{}", answer.invite);
    eprintln!(
        "single use, valid for {}; on the new machine run: weft join <invite>",
        humantime::format_duration(ttl)
    );
    Ok(())
}

/// `weft revoke`.
pub fn revoke(data: Option<PathBuf>, args: RevokeArgs) -> Result<()> {
    let answer: RevokeParams =
        client(data)?.post("/v1/revoke", &RevokeParams { node: args.node })?;
    println!(
        "revoked node {}; the revocation is spreading to every node",
        answer.node
    );
    Ok(())
}

fn dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// `3d4h`, `5m12s`, `42s`.
pub fn human_secs(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}
