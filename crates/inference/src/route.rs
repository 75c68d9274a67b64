//! Where a request for a model goes: the pure routing decision of inference on a fabric, IO-free
//! and deterministic (the node will feed it the ready replicas from `serve` rows and its view
//! of the membership; tests feed it made-up ones). Which nodes hold a model is
//! [`crate::models::holders`].

use std::collections::BTreeSet;

/// Where a request may run: empty lists allow anywhere.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Allowed {
    /// Regions.
    pub regions: Vec<String>,
    /// Jurisdictions (upper case).
    pub jurisdictions: Vec<String>,
}

impl Allowed {
    /// Whether a node in `region` / `jurisdiction` may see the request.
    pub fn admits(&self, region: &str, jurisdiction: &str) -> bool {
        (self.regions.is_empty() || self.regions.iter().any(|r| r == region))
            && (self.jurisdictions.is_empty()
                || self
                    .jurisdictions
                    .iter()
                    .any(|j| j.eq_ignore_ascii_case(jurisdiction)))
    }

    /// The narrower of two restrictions (a key's scope and a request's header): a place must
    /// be allowed by both. `None` when nothing can be (two lists with nothing in common).
    pub fn and(&self, other: &Allowed) -> Option<Allowed> {
        fn meet(a: &[String], b: &[String]) -> Option<Vec<String>> {
            if a.is_empty() {
                return Some(b.to_vec());
            }
            if b.is_empty() {
                return Some(a.to_vec());
            }
            let both: Vec<String> = a
                .iter()
                .filter(|x| b.iter().any(|y| y.eq_ignore_ascii_case(x)))
                .cloned()
                .collect();
            (!both.is_empty()).then_some(both)
        }
        Some(Allowed {
            regions: meet(&self.regions, &other.regions)?,
            jurisdictions: meet(&self.jurisdictions, &other.jurisdictions)?,
        })
    }
}

/// A node serving the model, as the router sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Replica<N> {
    /// The node.
    pub node: N,
    /// This node (no network hop).
    pub local: bool,
    /// Estimated round trip to it, ms (from network coordinates; 0 for this node).
    pub rtt_ms: f64,
    /// Requests it has queued or running.
    pub queued: u32,
    /// How many it takes before it answers "busy".
    pub capacity: u32,
    /// Its region.
    pub region: String,
    /// Its jurisdiction.
    pub jurisdiction: String,
}

/// What to do with a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Route<N> {
    /// Send it to this replica (this node's own when `local`).
    To(N),
    /// Every allowed replica is full: answer 429, retry after this many seconds.
    Busy {
        /// Seconds.
        retry_after: u32,
    },
    /// No replica is where the request may run (or none is up at all).
    Nowhere {
        /// Why, for the caller.
        why: String,
    },
}

/// Route a request: among the replicas where it may run, not excluded (tried and failed), with
/// room in their queue, the one with the least expected wait — the round trip plus its queue
/// times `per_request_ms` (a replica's typical service time). Ties go to this node, then to the
/// lower round trip.
pub fn route<N: Clone + PartialEq>(
    replicas: &[Replica<N>],
    allowed: &Allowed,
    exclude: &[N],
    per_request_ms: f64,
) -> Route<N> {
    let in_place: Vec<&Replica<N>> = replicas
        .iter()
        .filter(|r| allowed.admits(&r.region, &r.jurisdiction))
        .collect();
    if in_place.is_empty() {
        let why = if replicas.is_empty() {
            "no node serves this model now".to_string()
        } else {
            format!(
                "no replica of this model is where the request may run (allowed: {}); replicas are in {}",
                describe(allowed),
                replicas
                    .iter()
                    .map(|r| format!("{}/{}", r.region, r.jurisdiction))
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        return Route::Nowhere { why };
    }
    let candidates: Vec<&&Replica<N>> = in_place
        .iter()
        .filter(|r| !exclude.contains(&r.node))
        .collect();
    if candidates.is_empty() {
        return Route::Nowhere {
            why: format!(
                "no replica where the request may run (allowed: {}) is answering",
                describe(allowed)
            ),
        };
    }
    let open: Vec<&&&Replica<N>> = candidates
        .iter()
        .filter(|r| r.queued < r.capacity)
        .collect();
    let Some(best) = open.into_iter().min_by(|a, b| {
        let cost = |r: &Replica<N>| r.rtt_ms.max(0.0) + r.queued as f64 * per_request_ms;
        cost(a)
            .total_cmp(&cost(b))
            .then(b.local.cmp(&a.local))
            .then(a.rtt_ms.total_cmp(&b.rtt_ms))
    }) else {
        // Full everywhere: come back when the shortest queue has likely moved on.
        let wait = candidates
            .iter()
            .map(|r| (r.queued.saturating_sub(r.capacity) + 1) as f64 * per_request_ms)
            .fold(f64::INFINITY, f64::min);
        return Route::Busy {
            retry_after: ((wait / 1000.0).ceil() as u32).clamp(1, 60),
        };
    };
    Route::To(best.node.clone())
}

/// The replicas whose nodes publish a price (per 1,000 tokens, from `price_of`) of at most
/// `max`; a node that published none is never within a maximum.
pub fn priced_within<N>(
    replicas: Vec<Replica<N>>,
    price_of: impl Fn(&N) -> Option<u64>,
    max: u64,
) -> Vec<Replica<N>> {
    replicas
        .into_iter()
        .filter(|r| price_of(&r.node).is_some_and(|p| p <= max))
        .collect()
}

fn describe(a: &Allowed) -> String {
    let mut parts = Vec::new();
    if !a.regions.is_empty() {
        parts.push(format!("regions {}", a.regions.join(",")));
    }
    if !a.jurisdictions.is_empty() {
        parts.push(format!("jurisdictions {}", a.jurisdictions.join(",")));
    }
    if parts.is_empty() {
        "anywhere".into()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(node: u8, region: &str, rtt: f64, queued: u32) -> Replica<u8> {
        Replica {
            node,
            local: rtt == 0.0,
            rtt_ms: rtt,
            queued,
            capacity: 4,
            region: region.into(),
            jurisdiction: if region == "eu" {
                "DE".into()
            } else {
                "US".into()
            },
        }
    }

    fn eu() -> Allowed {
        Allowed {
            regions: vec!["eu".into()],
            jurisdictions: vec![],
        }
    }

    #[test]
    fn a_maximum_price_keeps_only_replicas_priced_under_it() {
        let all = vec![
            replica(1, "eu", 0.0, 0),
            replica(2, "eu", 5.0, 0),
            replica(3, "us", 40.0, 0),
        ];
        // Node 1 is the dearest, node 3 published no price.
        let price = |n: &u8| match n {
            1 => Some(5_000),
            2 => Some(1_000),
            _ => None,
        };
        let kept = priced_within(all.clone(), price, 1_000);
        assert_eq!(kept.iter().map(|r| r.node).collect::<Vec<_>>(), vec![2]);
        // The nearest (local) replica is passed over for the one within the price.
        assert_eq!(route(&kept, &Allowed::default(), &[], 10.0), Route::To(2));
        assert!(priced_within(all, price, 999).is_empty());
    }

    #[test]
    fn the_nearest_replica_with_room_takes_the_request() {
        let all = [
            replica(1, "us", 80.0, 0),
            replica(2, "eu", 20.0, 0),
            replica(3, "eu", 5.0, 4),
        ];
        // 3 is nearest but full; 2 is next.
        assert_eq!(route(&all, &Allowed::default(), &[], 100.0), Route::To(2));
        // A queue costs its wait: 20 ms + 1 × 100 ms is more than 80 ms.
        let busy = [replica(1, "us", 80.0, 0), replica(2, "eu", 20.0, 1)];
        assert_eq!(route(&busy, &Allowed::default(), &[], 100.0), Route::To(1));
        // This node wins a tie.
        let tie = [replica(1, "eu", 10.0, 0), replica(2, "eu", 0.0, 0)];
        assert_eq!(route(&tie, &Allowed::default(), &[], 10.0), Route::To(2));
        // A replica that failed before its first token is not tried again.
        assert_eq!(route(&all, &Allowed::default(), &[2], 100.0), Route::To(1));
    }

    #[test]
    fn a_restricted_request_never_goes_outside_its_regions() {
        let all = [replica(1, "us", 1.0, 0), replica(2, "eu", 90.0, 0)];
        assert_eq!(route(&all, &eu(), &[], 100.0), Route::To(2));
        let us_only = [replica(1, "us", 1.0, 0)];
        match route(&us_only, &eu(), &[], 100.0) {
            Route::Nowhere { why } => {
                assert!(why.contains("regions eu") && why.contains("us/US"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        match route(&all, &eu(), &[2], 100.0) {
            Route::Nowhere { why } => {
                assert!(
                    why.contains("is answering") && why.contains("regions eu"),
                    "{why}"
                )
            }
            other => panic!("{other:?}"),
        }
        match route::<u8>(&[], &Allowed::default(), &[], 100.0) {
            Route::Nowhere { why } => assert!(why.contains("no node serves"), "{why}"),
            other => panic!("{other:?}"),
        }
        let de = Allowed {
            regions: vec![],
            jurisdictions: vec!["de".into()],
        };
        assert_eq!(route(&all, &de, &[], 100.0), Route::To(2));
    }

    #[test]
    fn full_replicas_answer_busy_with_a_retry_time() {
        let full = [replica(1, "eu", 5.0, 4), replica(2, "eu", 9.0, 6)];
        assert_eq!(
            route(&full, &Allowed::default(), &[], 1500.0),
            Route::Busy { retry_after: 2 }
        );
        // Only the allowed replicas count: a full eu replica is busy even if us has room.
        let mixed = [replica(1, "eu", 5.0, 4), replica(2, "us", 9.0, 0)];
        assert!(matches!(
            route(&mixed, &eu(), &[], 100.0),
            Route::Busy { .. }
        ));
    }

    #[test]
    fn restrictions_narrow_each_other() {
        let any = Allowed::default();
        assert_eq!(any.and(&eu()), Some(eu()));
        assert_eq!(eu().and(&any), Some(eu()));
        let us = Allowed {
            regions: vec!["us".into()],
            jurisdictions: vec![],
        };
        assert_eq!(eu().and(&us), None);
        let both = Allowed {
            regions: vec!["eu".into(), "us".into()],
            jurisdictions: vec![],
        };
        assert_eq!(both.and(&us), Some(us.clone()));
        assert!(eu().admits("eu", "DE") && !eu().admits("us", "US"));
    }
}
