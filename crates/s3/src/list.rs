//! Listing pages the way S3 defines them: keys under a prefix, rolled up into common prefixes at
//! a delimiter, cut into pages of at most `max` entries with an opaque continuation point.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// One entry of a page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry<T> {
    /// An object.
    Key(String, T),
    /// A common prefix (ends with the delimiter).
    Prefix(String),
}

/// One page.
#[derive(Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// Entries in key order.
    pub entries: Vec<Entry<T>>,
    /// More entries follow.
    pub truncated: bool,
    /// Where the next page starts (set when truncated).
    pub next: Option<String>,
}

/// Where a page starts: after this key or after this whole common prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum After {
    /// Nothing: from the start.
    Start,
    /// After a key (S3's StartAfter and Marker).
    Key(String),
    /// After every key under a common prefix.
    Prefix(String),
}

impl After {
    /// The opaque continuation token for it.
    pub fn token(&self) -> String {
        let raw = match self {
            After::Start => String::new(),
            After::Key(k) => format!("k{k}"),
            After::Prefix(p) => format!("p{p}"),
        };
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Read a token back; `None` if it is not one of ours.
    pub fn from_token(token: &str) -> Option<After> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
        match raw.split_at_checked(1)? {
            ("k", k) => Some(After::Key(k.into())),
            ("p", p) => Some(After::Prefix(p.into())),
            _ => None,
        }
    }

    fn skips(&self, key: &str) -> bool {
        match self {
            After::Start => false,
            After::Key(k) => key <= k.as_str(),
            After::Prefix(p) => key <= p.as_str() || key.starts_with(p.as_str()),
        }
    }
}

/// A page of `rows` (sorted by key, all starting with `prefix`).
pub fn page<T>(
    rows: impl IntoIterator<Item = (String, T)>,
    prefix: &str,
    delimiter: Option<&str>,
    after: &After,
    max: usize,
) -> Page<T> {
    let mut entries: Vec<Entry<T>> = Vec::new();
    let mut last: Option<After> = None;
    let mut truncated = false;
    for (key, value) in rows {
        if !key.starts_with(prefix) || after.skips(&key) {
            continue;
        }
        if let Some(After::Prefix(p)) = &last
            && key.starts_with(p.as_str())
        {
            continue;
        }
        let rolled = delimiter.filter(|d| !d.is_empty()).and_then(|d| {
            key[prefix.len()..]
                .find(d)
                .map(|i| key[..prefix.len() + i + d.len()].to_string())
        });
        if entries.len() == max {
            truncated = true;
            break;
        }
        match rolled {
            Some(p) => {
                last = Some(After::Prefix(p.clone()));
                entries.push(Entry::Prefix(p));
            }
            None => {
                last = Some(After::Key(key.clone()));
                entries.push(Entry::Key(key, value));
            }
        }
    }
    Page {
        next: if truncated {
            last.map(|l| l.token())
        } else {
            None
        },
        entries,
        truncated,
    }
}

/// Percent-encode a key for `encoding-type=url` answers (everything but unreserved characters
/// and '/').
pub fn url_encode(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys(list: &[&str]) -> Vec<(String, ())> {
        let mut v: Vec<(String, ())> = list.iter().map(|k| (k.to_string(), ())).collect();
        v.sort();
        v
    }

    fn names(p: &Page<()>) -> Vec<String> {
        p.entries
            .iter()
            .map(|e| match e {
                Entry::Key(k, _) => k.clone(),
                Entry::Prefix(p) => format!("{p}*"),
            })
            .collect()
    }

    #[test]
    fn delimiters_roll_keys_up_and_pages_continue() {
        let rows = keys(&["a/1", "a/2", "b", "c/x/1", "c/y", "d"]);
        let p = page(rows.clone(), "", Some("/"), &After::Start, 1000);
        assert_eq!(names(&p), ["a/*", "b", "c/*", "d"]);
        assert!(!p.truncated);
        let p = page(rows.clone(), "c/", Some("/"), &After::Start, 1000);
        assert_eq!(names(&p), ["c/x/*", "c/y"]);
        // Two at a time: every entry exactly once.
        let mut after = After::Start;
        let mut seen = Vec::new();
        loop {
            let p = page(rows.clone(), "", Some("/"), &after, 2);
            seen.extend(names(&p));
            match p.next {
                Some(t) => after = After::from_token(&t).unwrap(),
                None => break,
            }
        }
        assert_eq!(seen, ["a/*", "b", "c/*", "d"]);
        assert_eq!(After::from_token("!!"), None);
        assert_eq!(url_encode("a b/ü+"), "a%20b/%C3%BC%2B");
    }

    proptest! {
        #[test]
        fn pages_cover_the_listing_exactly_once(
            raw in proptest::collection::btree_set("[ab/]{1,6}", 0..40),
            max in 1usize..5,
            delim in proptest::bool::ANY,
        ) {
            let rows: Vec<(String, ())> = raw.iter().map(|k| (k.clone(), ())).collect();
            let d = delim.then_some("/");
            let whole = names(&page(rows.clone(), "", d, &After::Start, usize::MAX));
            let mut after = After::Start;
            let mut paged = Vec::new();
            loop {
                let p = page(rows.clone(), "", d, &after, max);
                prop_assert!(p.entries.len() <= max);
                paged.extend(names(&p));
                match p.next {
                    Some(t) => after = After::from_token(&t).unwrap(),
                    None => break,
                }
            }
            prop_assert_eq!(paged, whole);
        }
    }
}
