//! `node.toml`: the node's configuration file, and its validation into [`NodeSettings`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use weft_core::Capacity;
use weft_fabric::SwimTiming;
use weft_net::WanConfig;
use weft_net::wan::parse_percent;
use weft_node::NodeSettings;

/// Shard capacity offered when `[capacity] disk_gib` is not set.
pub const DEFAULT_DISK_GIB: u64 = 10;

/// File name inside the data directory.
pub const CONFIG_FILE: &str = "node.toml";

/// The file as written on disk.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    /// UDP address for QUIC (default 127.0.0.1:7400).
    pub listen: Option<String>,
    /// Address other nodes use to reach this one (default: the listen address).
    pub advertise: Option<String>,
    /// Local HTTP API address (default 127.0.0.1:0 — a free port, written to `api.addr`).
    pub api: Option<String>,
    /// Log filter, e.g. "info" or "weft_fabric=debug".
    pub log: Option<String>,
    /// Operator labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Offered resources.
    #[serde(default)]
    pub capacity: CapacityFile,
    /// WAN emulation.
    pub wan: Option<WanFile>,
    /// Failure-detection timing.
    #[serde(default)]
    pub swim: SwimFile,
    /// The S3 gateway.
    #[serde(default)]
    pub s3: S3File,
    /// The OpenAI-compatible API and the inference queue.
    #[serde(default)]
    pub openai: OpenAiFile,
    /// Repair and scrubbing.
    #[serde(default)]
    pub repair: RepairFile,
    /// Jobs this node runs.
    #[serde(default)]
    pub jobs: JobsFile,
    /// What this node charges.
    #[serde(default)]
    pub prices: PricesFile,
}

/// `[prices]`: credits per unit of work (defaults: 0.001 per 10⁹ fuel, 0.001 per 1,000
/// tokens, 0.1 per GB-month stored, 0.05 per GB served).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricesFile {
    /// Per 10⁹ fuel.
    pub fuel: Option<f64>,
    /// Per 1,000 tokens.
    pub tokens: Option<f64>,
    /// Per GB stored for a month.
    pub storage_gb_month: Option<f64>,
    /// Per GB served.
    pub egress_gb: Option<f64>,
}

impl PricesFile {
    /// The validated prices, micro-credits per unit.
    pub fn config(&self) -> Result<weft_ledger::Prices> {
        let mut p = weft_ledger::Prices::default();
        for (name, value, into) in [
            ("fuel", self.fuel, &mut p.fuel_per_g),
            ("tokens", self.tokens, &mut p.tokens_per_k),
            (
                "storage_gb_month",
                self.storage_gb_month,
                &mut p.storage_gb_month,
            ),
            ("egress_gb", self.egress_gb, &mut p.egress_gb),
        ] {
            if let Some(v) = value {
                if !(v.is_finite() && (0.0..=1000.0).contains(&v)) {
                    bail!("[prices] {name} = {v}: credits per unit, from 0 to 1000");
                }
                *into = (v * 1e6).round() as u64;
            }
        }
        Ok(p)
    }
}

/// `[jobs]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsFile {
    /// Most GiB one run may write (`/out`, stdout and stderr together) before it is stopped
    /// (default 4).
    pub output_gib: Option<u64>,
}

impl JobsFile {
    /// The validated settings.
    pub fn config(&self) -> Result<weft_jobs::JobsConfig> {
        let mut cfg = weft_jobs::JobsConfig::default();
        match self.output_gib {
            None => {}
            Some(0) => bail!("[jobs] output_gib must be at least 1"),
            Some(g) if g > 1 << 20 => bail!("[jobs] output_gib must be at most {}", 1u64 << 20),
            Some(g) => cfg.output_quota = g << 30,
        }
        Ok(cfg)
    }
}

/// `[repair]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepairFile {
    /// How long a node may be gone before its shards are rebuilt elsewhere (default "5m").
    pub grace: Option<String>,
    /// Time between checks of owned objects (default "30s").
    pub interval: Option<String>,
    /// Repair rate limit in MiB/s (default 256).
    pub rate_mib: Option<u64>,
    /// Scrubbing rate in MiB/s (default 16; 0 turns scrubbing off).
    pub scrub_mib: Option<u64>,
    /// Time between scrubbing passes (default "1h").
    pub scrub_interval: Option<String>,
    /// How long unreferenced objects wait before their shards are reclaimed (default "1h").
    pub gc_delay: Option<String>,
    /// How often this node issues storage receipts for what it holds (default "1h").
    pub storage_receipts: Option<String>,
}

impl RepairFile {
    /// Validated settings.
    pub fn config(&self) -> Result<weft_node::HealConfig> {
        let mut c = weft_node::HealConfig::default();
        let dur = |what: &str, v: &Option<String>, into: &mut std::time::Duration| -> Result<()> {
            if let Some(t) = v {
                *into = humantime::parse_duration(t)
                    .map_err(|e| anyhow::anyhow!("[repair] {what} = {t:?}: {e}"))?;
            }
            Ok(())
        };
        dur("grace", &self.grace, &mut c.grace)?;
        dur("interval", &self.interval, &mut c.interval)?;
        dur(
            "scrub_interval",
            &self.scrub_interval,
            &mut c.scrub_interval,
        )?;
        dur("gc_delay", &self.gc_delay, &mut c.gc_delay)?;
        dur(
            "storage_receipts",
            &self.storage_receipts,
            &mut c.storage_receipts_every,
        )?;
        if c.interval.is_zero()
            || c.scrub_interval.is_zero()
            || c.storage_receipts_every < std::time::Duration::from_secs(1)
        {
            anyhow::bail!(
                "[repair] interval and scrub_interval must be more than zero, storage_receipts at least 1s"
            );
        }
        if let Some(r) = self.rate_mib {
            if r == 0 {
                anyhow::bail!("[repair] rate_mib must be at least 1");
            }
            c.repair_bytes_per_sec = r << 20;
        }
        if let Some(r) = self.scrub_mib {
            c.scrub_bytes_per_sec = r << 20;
        }
        Ok(c)
    }
}

/// `[s3]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3File {
    /// Address (default 127.0.0.1:0 — a free port, written to `s3.addr`); "off" disables it.
    pub listen: Option<String>,
    /// Domains for virtual-host-style requests (default ["localhost"]).
    pub domains: Option<Vec<String>>,
    /// Largest object or part accepted, in MiB (default 5120).
    pub max_object_mib: Option<u64>,
    /// Requests per second per access key (default 1000; 0: unlimited).
    pub requests_per_sec: Option<u32>,
}

/// `[openai]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiFile {
    /// Address (default 127.0.0.1:0 — a free port, written to `openai.addr`); "off" disables it.
    pub listen: Option<String>,
    /// Requests each model this node holds takes, running and waiting, before it answers
    /// "busy" (default 8).
    pub queue: Option<u32>,
    /// Largest request body in MiB (default 16).
    pub max_body_mib: Option<usize>,
}

/// `[capacity]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityFile {
    /// CPUs offered (default: all).
    pub cpus: Option<u32>,
    /// Memory offered in MiB (default: all).
    pub mem_mib: Option<u64>,
    /// Disk offered for shards in GiB (default: 10).
    pub disk_gib: Option<u64>,
}

/// `[wan]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WanFile {
    /// `a-b=DELAY[:JITTER[:LOSS%]]` items, comma separated (one-way delays).
    #[serde(default)]
    pub links: String,
    /// Loss applied to every datagram, e.g. "5%".
    pub loss: Option<String>,
}

/// `[swim]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwimFile {
    /// Probe period in ms.
    pub probe_period_ms: Option<u64>,
    /// Direct probe timeout in ms.
    pub probe_rtt_ms: Option<u64>,
    /// Suspicion timeout in ms.
    pub suspect_ms: Option<u64>,
}

impl NodeFile {
    /// Read `node.toml` from `dir` (an absent file means defaults).
    pub fn load(dir: &Path) -> Result<NodeFile> {
        let path = dir.join(CONFIG_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                toml::from_str(&text).with_context(|| format!("invalid {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NodeFile::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Write it to `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let text = toml::to_string_pretty(self).context("cannot encode node.toml")?;
        std::fs::write(dir.join(CONFIG_FILE), text)
            .with_context(|| format!("cannot write {}", dir.join(CONFIG_FILE).display()))
    }

    /// Validate into settings.
    pub fn settings(&self, data_dir: &Path) -> Result<NodeSettings> {
        let listen = parse_addr("listen", self.listen.as_deref().unwrap_or("127.0.0.1:7400"))?;
        let advertise = self
            .advertise
            .as_deref()
            .map(|a| parse_addr("advertise", a))
            .transpose()?;
        if listen.ip().is_unspecified() && advertise.is_none() {
            bail!(
                "listen = {listen} binds every interface, so peers need to be told where to reach \
                 this node: set advertise = \"HOST:{}\" in {}",
                listen.port(),
                data_dir.join(CONFIG_FILE).display()
            );
        }
        if advertise.is_some_and(|a| a.ip().is_unspecified() || a.port() == 0) {
            bail!("advertise must be a concrete address with a port");
        }
        let wan = match &self.wan {
            None => None,
            Some(w) => Some(WanConfig {
                links: WanConfig::parse_links(&w.links)
                    .map_err(|e| anyhow::anyhow!("[wan] links: {e}"))?,
                loss: w
                    .loss
                    .as_deref()
                    .map(parse_percent)
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("[wan] loss: {e}"))?
                    .unwrap_or(0.0),
            }),
        };
        let defaults = SwimTiming::default();
        let ms = |v: Option<u64>, d: Duration, name: &str| -> Result<Duration> {
            match v {
                None => Ok(d),
                Some(0) => bail!("[swim] {name} must be positive"),
                Some(v) if v > 60_000 => bail!("[swim] {name} must be at most 60000"),
                Some(v) => Ok(Duration::from_millis(v)),
            }
        };
        let timing = SwimTiming {
            probe_period: ms(
                self.swim.probe_period_ms,
                defaults.probe_period,
                "probe_period_ms",
            )?,
            probe_rtt: ms(self.swim.probe_rtt_ms, defaults.probe_rtt, "probe_rtt_ms")?,
            suspect_to_down: ms(self.swim.suspect_ms, defaults.suspect_to_down, "suspect_ms")?,
        };
        if timing.probe_rtt >= timing.probe_period {
            bail!("[swim] probe_rtt_ms must be smaller than probe_period_ms");
        }
        Ok(NodeSettings {
            data_dir: data_dir.to_path_buf(),
            listen,
            advertise,
            labels: self.labels.clone(),
            capacity: Capacity {
                cpus: self.capacity.cpus.unwrap_or_else(|| {
                    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
                }),
                mem_bytes: self.capacity.mem_mib.map_or_else(total_memory, |m| m << 20),
                disk_bytes: self.capacity.disk_gib.unwrap_or(DEFAULT_DISK_GIB) << 30,
            },
            wan,
            timing,
            heal: self.repair.config()?,
            jobs: self.jobs.config()?,
            prices: self.prices.config()?,
        })
    }

    /// The API address.
    pub fn api_addr(&self) -> Result<SocketAddr> {
        parse_addr("api", self.api.as_deref().unwrap_or("127.0.0.1:0"))
    }

    /// The S3 gateway's address and settings (None: turned off).
    pub fn s3(&self) -> Result<Option<(SocketAddr, weft_s3::GatewayConfig)>> {
        let listen = self.s3.listen.as_deref().unwrap_or("127.0.0.1:0");
        if listen == "off" {
            return Ok(None);
        }
        let mut cfg = weft_s3::GatewayConfig::default();
        if let Some(d) = &self.s3.domains {
            cfg.domains = d.clone();
        }
        if let Some(m) = self.s3.max_object_mib {
            cfg.max_object_bytes = m.saturating_mul(1 << 20);
        }
        if let Some(r) = self.s3.requests_per_sec {
            cfg.requests_per_sec = r;
        }
        Ok(Some((parse_addr("[s3] listen", listen)?, cfg)))
    }

    /// The OpenAI-compatible API's address and settings (None: turned off).
    pub fn openai(&self) -> Result<Option<(SocketAddr, weft_openai::OpenAiConfig)>> {
        let listen = self.openai.listen.as_deref().unwrap_or("127.0.0.1:0");
        if listen == "off" {
            return Ok(None);
        }
        let mut cfg = weft_openai::OpenAiConfig::default();
        if let Some(m) = self.openai.max_body_mib {
            if m == 0 {
                bail!("[openai] max_body_mib must be at least 1");
            }
            cfg.max_body_bytes = m.saturating_mul(1 << 20);
        }
        Ok(Some((parse_addr("[openai] listen", listen)?, cfg)))
    }

    /// How many requests per model this node takes before it answers "busy".
    pub fn inference_queue(&self) -> Result<u32> {
        match self.openai.queue {
            Some(0) => bail!("[openai] queue must be at least 1"),
            Some(q) => Ok(q),
            None => Ok(weft_inference::DEFAULT_QUEUE),
        }
    }
}

/// Parse `host:port`.
pub fn parse_addr(what: &str, text: &str) -> Result<SocketAddr> {
    text.trim()
        .parse()
        .with_context(|| format!("{what} = {text:?} is not an address like 127.0.0.1:7400"))
}

/// Validate a `--wan` flag value.
pub fn check_wan_links(text: &str) -> Result<()> {
    WanConfig::parse_links(text)
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("--wan: {e}"))
}

fn total_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let s = NodeFile::default().settings(Path::new("/tmp/x")).unwrap();
        assert_eq!(s.listen.port(), 7400);
        assert!(s.wan.is_none());
    }

    #[test]
    fn bad_values_are_explained() {
        let cases = [
            ("listen = \"nowhere\"", "not an address"),
            ("listen = \"0.0.0.0:7400\"", "advertise"),
            ("[wan]\nlinks = \"eu=5ms\"", "[wan] links"),
            ("[wan]\nloss = \"150%\"", "[wan] loss"),
            ("[swim]\nprobe_period_ms = 0", "must be positive"),
            (
                "[swim]\nprobe_period_ms = 100\nprobe_rtt_ms = 200",
                "smaller",
            ),
            ("[jobs]\noutput_gib = 0", "[jobs] output_gib"),
            ("[prices]\nfuel = -1", "[prices] fuel"),
        ];
        for (text, expected) in cases {
            let file: NodeFile = toml::from_str(text).unwrap();
            let err = format!("{:#}", file.settings(Path::new("/tmp/x")).unwrap_err());
            assert!(err.contains(expected), "{text}: {err}");
        }
        assert!(toml::from_str::<NodeFile>("colour = 1").is_err());
    }
}
