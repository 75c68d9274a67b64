//! Sessions: what an account hands the node that acts for it.
//!
//! A client holding an account key makes a fresh *delegate* key, has the account sign a
//! [`Delegation`] to it (scope, expiry), and sends the node the delegate's secret, the delegation
//! and the [`BucketKeys`] the work needs — never the account key. The node signs the account's
//! rows with the delegate key; every replica checks the delegation, so a node can do no more
//! with a session than it allows, nor after it expires. A read-only session carries no
//! delegate secret: the node can read with it and sign nothing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use weft_core::{BucketKeys, Delegation, Scope, SecretKey, wire};

use crate::Access;

/// How a session presented as text starts.
const PREFIX: &str = "weft-session1-";

/// A session as it travels (see the module docs).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Session {
    /// The delegate's secret (`None`: read-only).
    pub delegate: Option<[u8; 32]>,
    /// The account's delegation to the delegate.
    pub via: Delegation,
    /// The bucket keys the holder may use.
    pub keys: BucketKeys,
}

/// A session that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Not a session.
    #[error("not a weft session ({0})")]
    Malformed(String),
    /// Signature, delegate or keys do not match.
    #[error("the session is not signed by its account or names another delegate")]
    Forged,
    /// Too old.
    #[error("the session expired; run the command again (the CLI makes a new one)")]
    Expired,
}

impl Session {
    /// A session of `account` for `scope`, valid for `ttl_ms` from `now_ms`, with the legacy
    /// keys of `buckets` (see [`BucketKeys::of`]); read-only if not `write`.
    pub fn new(
        account: &SecretKey,
        scope: Scope,
        write: bool,
        now_ms: u64,
        ttl_ms: u64,
        buckets: &[&str],
    ) -> Session {
        let mut seed = [0u8; 32];
        // A failed fill leaves a predictable delegate; refuse to hand one out.
        assert!(
            getrandom::fill(&mut seed).is_ok(),
            "the operating system's random source failed"
        );
        let delegate = SecretKey::from_seed(seed);
        let keys = BucketKeys::of(account, &scope, buckets);
        let via = Delegation::sign(
            account,
            delegate.public(),
            scope,
            now_ms.saturating_add(ttl_ms),
        );
        Session {
            delegate: write.then_some(seed),
            via,
            keys,
        }
    }

    /// What a reader shows a node that holds something of its bucket in the clear: its
    /// delegation, without the delegate's secret or any key (read-only, opens nothing).
    pub fn public_part(&self) -> Session {
        Session {
            delegate: None,
            via: self.via.clone(),
            keys: BucketKeys::default(),
        }
    }

    /// The text form (for an HTTP header).
    pub fn to_text(&self) -> String {
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(wire::encode(self)))
    }

    /// Parse the text form.
    pub fn from_text(text: &str) -> Result<Session, SessionError> {
        let body = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or_else(|| SessionError::Malformed("wrong prefix".into()))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| SessionError::Malformed(e.to_string()))?;
        wire::decode(&bytes).map_err(|e| SessionError::Malformed(e.to_string()))
    }

    /// Check it at `now_ms` and turn it into what a node acts with.
    pub fn access(&self, now_ms: u64) -> Result<Access, SessionError> {
        if !self.via.signature_ok() {
            return Err(SessionError::Forged);
        }
        if now_ms > self.via.body.expires_ms {
            return Err(SessionError::Expired);
        }
        // Keys for buckets outside the scope are dropped, so scope holds here as at replicas.
        let scope = &self.via.body.scope;
        let keys = self.keys.clone().within(scope);
        let account = self.via.body.account;
        let access = match self.delegate {
            None => Access::read_only(account, keys),
            Some(seed) => {
                let key = SecretKey::from_seed(seed);
                if key.public() != self.via.body.delegate {
                    return Err(SessionError::Forged);
                }
                Access::delegated(key, self.via.clone(), keys)
            }
        };
        let access = access.within(scope);
        Ok(match scope {
            Scope::Account => access,
            Scope::Bucket(b) => access.scoped_to(b.clone(), self.via.body.delegate),
            Scope::Own { write, .. } => access.writing_only(write.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_round_trip_and_refuse_forgery_and_age() {
        let alice = SecretKey::from_seed([5; 32]);
        let s = Session::new(&alice, Scope::Account, true, 1_000, 60_000, &["old"]);
        let back = Session::from_text(&s.to_text()).unwrap();
        let access = back.access(2_000).unwrap();
        assert_eq!(access.author(), alice.public());
        assert!(access.can_write());
        assert!(matches!(back.access(61_001), Err(SessionError::Expired)));
        let mut other = back.clone();
        other.delegate = Some([9; 32]);
        assert!(matches!(other.access(2_000), Err(SessionError::Forged)));
        let mut stretched = back.clone();
        stretched.via.body.expires_ms = u64::MAX;
        assert!(matches!(stretched.access(2_000), Err(SessionError::Forged)));
        let ro = Session::new(&alice, Scope::Account, false, 1_000, 60_000, &[]);
        assert!(!ro.access(2_000).unwrap().can_write());
        assert!(Session::from_text("weft-session1-!!").is_err());
        assert!(Session::from_text("nope").is_err());
    }

    /// Structured hostile input for what a client or a forwarding node hands over: a valid
    /// session with a length or a count rewritten to something huge at every position, and
    /// every truncation of its text form. Each answers at once.
    #[test]
    fn hostile_sessions_are_refused_cheaply() {
        use weft_core::wire::hostile;
        let alice = SecretKey::from_seed([6; 32]);
        let own = Scope::Own {
            write: vec!["out".into()],
            read: vec!["data".into(), "models".into()],
        };
        let s = Session::new(&alice, own, true, 1_000, 60_000, &[]);
        let slowest = hostile::slowest::<Session>(&wire::encode(&s));
        assert!(
            slowest < std::time::Duration::from_millis(200),
            "{slowest:?}"
        );
        let text = s.to_text();
        for n in 0..text.len() {
            assert!(Session::from_text(&text[..n]).is_err());
        }
    }
}
