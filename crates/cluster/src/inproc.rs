//! Real nodes in this process: the main layer of the test pyramid.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use weft_core::{Capacity, Placement, Role, SecretKey};
use weft_data::{Access, Acting};
use weft_net::WanConfig;
use weft_node::{DataDir, HealConfig, InviteRequest, MemberState, Node, NodeSettings};

/// How a test fabric is laid out and set up.
#[derive(Clone)]
pub struct Builder {
    placements: Vec<Placement>,
    roles: Vec<Role>,
    heal: HealConfig,
    wan: Option<WanConfig>,
    capacity: Capacity,
    timeout: Duration,
    prices: HashMap<usize, weft_node::Prices>,
}

impl Builder {
    /// `n` nodes in three sites `s0`, `s1`, `s2` (round robin) of region `eu`, jurisdiction
    /// `DE`; healing checks and scrubbing only when a test runs them; garbage kept an hour.
    pub fn new(n: usize) -> Builder {
        let placements = (0..n)
            .map(|i| Placement {
                site: format!("s{}", i % 3),
                region: "eu".into(),
                jurisdiction: "DE".into(),
            })
            .collect();
        Builder {
            placements,
            roles: Vec::new(),
            heal: HealConfig {
                grace: Duration::from_secs(1),
                // Checks are driven by hand in tests.
                interval: Duration::from_secs(3600),
                scrub_interval: Duration::from_secs(3600),
                gc_delay: Duration::from_secs(3600),
                ..Default::default()
            },
            wan: None,
            capacity: Capacity {
                cpus: 1,
                mem_bytes: 1 << 30,
                disk_bytes: 1 << 30,
            },
            timeout: Duration::from_secs(20),
            prices: HashMap::new(),
        }
    }

    /// One node per region named (in order), two sites per region (`<region>-0`,
    /// `<region>-1`, alternating), jurisdiction the region in capitals.
    pub fn regions(regions: &[&str]) -> Builder {
        let mut b = Builder::new(regions.len());
        b.placements = regions
            .iter()
            .enumerate()
            .map(|(i, r)| Placement {
                site: format!("{r}-{}", i % 2),
                region: (*r).into(),
                jurisdiction: r.to_ascii_uppercase(),
            })
            .collect();
        b
    }

    /// Nodes in named sites (`[("eu", 2), ("us", 1)]`): each site its own region, jurisdiction
    /// the site in capitals.
    pub fn sites(sites: &[(&str, usize)]) -> Builder {
        let placements: Vec<Placement> = sites
            .iter()
            .flat_map(|(s, n)| {
                std::iter::repeat_n(
                    Placement {
                        site: (*s).into(),
                        region: (*s).into(),
                        jurisdiction: s.to_ascii_uppercase(),
                    },
                    *n,
                )
            })
            .collect();
        let mut b = Builder::new(placements.len());
        b.placements = placements;
        b
    }

    /// How long garbage (objects no name uses) is kept before it is reclaimed.
    pub fn gc_delay(mut self, delay: Duration) -> Builder {
        self.heal.gc_delay = delay;
        self
    }

    /// Disk each node offers for shards.
    pub fn disk(mut self, bytes: u64) -> Builder {
        self.capacity.disk_bytes = bytes;
        self
    }

    /// Change the healing settings.
    pub fn heal(mut self, f: impl FnOnce(&mut HealConfig)) -> Builder {
        f(&mut self.heal);
        self
    }

    /// Emulate these WAN links between the sites.
    pub fn wan(mut self, wan: WanConfig) -> Builder {
        self.wan = Some(wan);
        self
    }

    /// The roles every node but the first is invited with (none by default).
    pub fn roles(mut self, roles: &[Role]) -> Builder {
        self.roles = roles.to_vec();
        self
    }

    /// Node `i` charges `prices` (every other the defaults).
    pub fn prices(mut self, i: usize, prices: weft_node::Prices) -> Builder {
        self.prices.insert(i, prices);
        self
    }

    /// How long the fabric may take to form.
    pub fn timeout(mut self, timeout: Duration) -> Builder {
        self.timeout = timeout;
        self
    }

    /// The settings node `i` starts with, in data directory `dir`.
    fn settings(&self, i: usize, dir: &Path) -> NodeSettings {
        NodeSettings {
            data_dir: dir.to_path_buf(),
            listen: "127.0.0.1:0".parse().expect("an address"),
            advertise: None,
            labels: Default::default(),
            capacity: self.capacity.clone(),
            wan: self.wan.clone(),
            timing: Default::default(),
            jobs: Default::default(),
            prices: self.prices.get(&i).copied().unwrap_or_default(),
            heal: self.heal.clone(),
        }
    }

    /// Start the fabric: the first node creates it, every other is invited by the first and
    /// joins; returns once every node sees every other alive with its record.
    pub async fn start(self) -> Cluster {
        let tmp = tempfile::tempdir().expect("a temporary folder");
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut nodes: Vec<Node> = Vec::new();
        let mut settings = Vec::new();
        for (i, placement) in self.placements.iter().enumerate() {
            let path = tmp.path().join(format!("n{i}"));
            let dir = DataDir::open(&path).expect("a data directory");
            if i == 0 {
                weft_node::init_fabric(&dir, placement.clone(), weft_net::now_ms())
                    .expect("a new fabric");
            } else {
                let invite = nodes[0]
                    .invite(InviteRequest {
                        placement: placement.clone(),
                        roles: self.roles.clone(),
                        ttl: Duration::from_secs(60),
                    })
                    .expect("an invite");
                let key = dir.node_key().expect("a node key");
                let cert = weft_node::redeem(&invite, &key, Placement::default())
                    .await
                    .expect("admission");
                dir.save_membership(&invite.body.admin, &invite.body.bootstrap, &cert)
                    .expect("membership saved");
            }
            let s = self.settings(i, &path);
            nodes.push(Node::start(s.clone()).await.expect("the node starts"));
            settings.push(s);
            dirs.push(path);
        }
        let cluster = Cluster {
            tmp,
            dirs,
            nodes,
            settings,
        };
        let n = cluster.nodes.len();
        crate::wait("the fabric to form", self.timeout.as_secs(), || {
            cluster.nodes.iter().all(|node| all_alive(node, n))
        })
        .await;
        cluster
    }
}

/// Whether `node` sees `n` members, every one alive with its record.
pub fn all_alive(node: &Node, n: usize) -> bool {
    let m = node.members();
    m.len() == n
        && m.iter()
            .all(|s| s.state == MemberState::Alive && s.uptime.is_some())
}

/// A running test fabric. Its folder is removed when it is dropped.
pub struct Cluster {
    tmp: tempfile::TempDir,
    /// The nodes' data directories, in order.
    pub dirs: Vec<PathBuf>,
    /// The nodes, in order.
    pub nodes: Vec<Node>,
    settings: Vec<NodeSettings>,
}

impl Cluster {
    /// Node `i`.
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// The settings node `i` was started with (to start it again, changed).
    pub fn settings(&self, i: usize) -> NodeSettings {
        self.settings[i].clone()
    }

    /// The fabric's folder.
    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// Stop node `i` the one way a node stops ([`Node::shutdown`]); the returned handle is
    /// the stopped node (drop it to close its files).
    pub async fn stop(&mut self, i: usize) -> Node {
        let node = self.nodes[i].clone();
        node.shutdown().await;
        node
    }

    /// Start node `i` again on its data directory, at the address it had, with `settings`
    /// (see [`Cluster::settings`]); the stopped handle must have been dropped.
    pub async fn restart_with(&mut self, i: usize, mut settings: NodeSettings) -> &Node {
        settings.listen = self.nodes[i].addr();
        self.nodes[i] = Node::start(settings.clone())
            .await
            .expect("the node starts again");
        self.settings[i] = settings;
        &self.nodes[i]
    }

    /// An account (made from `seed`) acting through node `i`.
    pub fn account(&self, i: usize, seed: u8) -> Acting {
        self.nodes[i]
            .data()
            .acting(Access::account(SecretKey::from_seed([seed; 32])))
    }

    /// Wait until every node sees every other alive.
    pub async fn wait_formed(&self, secs: u64) {
        let n = self.nodes.len();
        crate::wait("the fabric to form again", secs, || {
            self.nodes.iter().all(|node| all_alive(node, n))
        })
        .await;
    }

    /// The folder, the data directories and the nodes, for tests that take them apart.
    pub fn into_parts(self) -> (tempfile::TempDir, Vec<PathBuf>, Vec<Node>) {
        (self.tmp, self.dirs, self.nodes)
    }
}

/// `n` nodes laid out by [`Builder::new`] with garbage kept `gc_delay`: the folder, the data
/// directories and the nodes.
pub async fn cluster(n: usize, gc_delay: Duration) -> (tempfile::TempDir, Vec<PathBuf>, Vec<Node>) {
    Builder::new(n)
        .gc_delay(gc_delay)
        .start()
        .await
        .into_parts()
}
