//! Typed row kinds. Each kind of row is declared once as a [`Schema`]: how its partition key is
//! made, its sort key and value types, its value format, and who may write it. The table's
//! public interface takes schemas, never key strings, so no key is formatted anywhere else.
//!
//! Values are stored as one format byte followed by the postcard encoding. A node that reads a
//! value whose format is newer than its schema knows gets [`Value::Newer`]: the row is kept,
//! merged by timestamp and forwarded unchanged by the table (which never decodes values), and
//! callers that would delete data because of what a row says must treat it as "cannot tell".

use serde::Serialize;
use serde::de::DeserializeOwned;
use weft_core::{ContentHash, NodeId, wire};

use crate::hlc::Timestamp;
use crate::row::{Entry, Writer};

/// One kind of row.
pub trait Schema: Send + Sync + 'static {
    /// The first segment of every partition key of this kind (no `/`).
    const KIND: &'static str;
    /// Who may write rows of this kind.
    const WRITER: Writer;
    /// The value format this build writes, and the newest it can read.
    const FORMAT: u8;
    /// What names a partition.
    type Part: ?Sized;
    /// The sort key within a partition.
    type Sort: SortKey + ?Sized;
    /// The value.
    type Value: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// The rest of the partition key after `KIND` (empty: the kind is one partition). Must not
    /// contain NUL.
    fn partition(part: &Self::Part) -> String;

    /// The regions `part`'s rows are held to (empty: anywhere): its partition key then carries
    /// their tag and its replicas are nodes in them ([`crate::ring`]). Default: anywhere.
    fn regions(part: &Self::Part) -> &[String] {
        let _ = part;
        &[]
    }

    /// Combine two versions of one row that replicas returned at once, before an update is
    /// applied on top (so a version only some replicas hold is not lost). Default: the newer.
    fn join(newer: Self::Value, _older: &Self::Value) -> Self::Value {
        newer
    }

    /// Decode the body of a value stored in `format` (at most [`Schema::FORMAT`]). Default: the
    /// current type, whatever the format; a kind whose value changed shape decodes its older
    /// formats here.
    fn decode(format: u8, body: &[u8]) -> Result<Self::Value, wire::WireError> {
        let _ = format;
        wire::decode(body)
    }
}

/// Declare a row kind with the common shape — a unit struct whose [`Schema`] stores its
/// value in format 1, takes the newer of two versions and decodes by the current type:
///
/// ```ignore
/// weft_meta::row_kind! {
///     /// The current version of each object of a bucket.
///     pub struct Objects {
///         kind: "obj",
///         writer: Writer::PartitionKey(1),
///         part: BucketId,
///         sort: str,
///         value: ObjectRecord,
///         partition: |bucket| bucket.key(),
///     }
/// }
/// ```
///
/// A kind whose value changed shape, or that joins concurrent versions, implements
/// [`Schema`] itself.
#[macro_export]
macro_rules! row_kind {
    (
        $(#[$doc:meta])*
        $vis:vis struct $name:ident {
            kind: $kind:literal,
            writer: $writer:expr,
            part: $part:ty,
            sort: $sort:ty,
            value: $value:ty,
            partition: |$p:pat_param| $body:expr
            $(, regions: |$r:pat_param| $rbody:expr)? $(,)?
        }
    ) => {
        $(#[$doc])*
        $vis struct $name;

        impl $crate::Schema for $name {
            const KIND: &'static str = $kind;
            const WRITER: $crate::Writer = $writer;
            const FORMAT: u8 = 1;
            type Part = $part;
            type Sort = $sort;
            type Value = $value;

            fn partition($p: &$part) -> String {
                $body
            }

            $(
                fn regions($r: &$part) -> &[String] {
                    $rbody
                }
            )?
        }
    };
}

/// The partition key of `part` in schema `S`.
pub fn partition_key<S: Schema>(part: &S::Part) -> String {
    let rest = S::partition(part);
    let kind = match crate::ring::tag(S::regions(part)) {
        Some(tag) => format!("{}@{tag}", S::KIND),
        None => S::KIND.to_string(),
    };
    if rest.is_empty() {
        kind
    } else {
        format!("{kind}/{rest}")
    }
}

/// A sort key: turned into the stored string and back.
pub trait SortKey {
    /// The stored form.
    fn to_sort(&self) -> String;
}

impl SortKey for str {
    fn to_sort(&self) -> String {
        self.to_string()
    }
}

impl SortKey for String {
    fn to_sort(&self) -> String {
        self.clone()
    }
}

impl SortKey for ContentHash {
    fn to_sort(&self) -> String {
        self.to_hex()
    }
}

impl SortKey for NodeId {
    fn to_sort(&self) -> String {
        self.to_hex()
    }
}

/// A decoded value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<T> {
    /// A format this node knows.
    Known(T),
    /// Written by a newer weft: kept and forwarded, but not understood here.
    Newer(u8),
    /// Does not decode (a bug or a malicious writer); the reason.
    Corrupt(String),
}

impl<T> Value<T> {
    /// The value, if this node understands it.
    pub fn known(self) -> Option<T> {
        match self {
            Value::Known(v) => Some(v),
            _ => None,
        }
    }
}

/// One version of a row, decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct Row<T> {
    /// When it was written.
    pub ts: Timestamp,
    /// Who signed it.
    pub signer: NodeId,
    /// The value, `None` if the row was deleted.
    pub value: Option<Value<T>>,
}

impl<T> Row<T> {
    /// The value if it is live and understood.
    pub fn known(self) -> Option<T> {
        self.value.and_then(Value::known)
    }

    /// Whether the row is live but not understood here (newer format or corrupt).
    pub fn is_unreadable(&self) -> bool {
        matches!(self.value, Some(Value::Newer(_) | Value::Corrupt(_)))
    }
}

/// Encode a value of `S` (format byte first).
pub fn encode_value<S: Schema>(value: &S::Value) -> Vec<u8> {
    let mut out = vec![S::FORMAT];
    out.extend_from_slice(&wire::encode(value));
    out
}

/// Decode a stored value of `S`.
pub fn decode_value<S: Schema>(bytes: &[u8]) -> Value<S::Value> {
    match bytes.split_first() {
        None | Some((0, _)) => Value::Corrupt("no format byte".into()),
        Some((&f, _)) if f > S::FORMAT => Value::Newer(f),
        Some((&f, body)) => match S::decode(f, body) {
            Ok(v) => Value::Known(v),
            Err(e) => Value::Corrupt(e.to_string()),
        },
    }
}

/// Decode an entry of `S`.
pub fn decode_row<S: Schema>(e: &Entry) -> Row<S::Value> {
    Row {
        ts: e.ts,
        signer: e.author(),
        value: e.value.as_deref().map(decode_value::<S>),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V1 {
        a: u32,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V2 {
        a: u32,
        b: String,
    }

    struct Old;
    impl Schema for Old {
        const KIND: &'static str = "t";
        const WRITER: Writer = Writer::Member;
        const FORMAT: u8 = 1;
        type Part = str;
        type Sort = str;
        type Value = V1;
        fn partition(part: &str) -> String {
            part.into()
        }
    }

    struct New;
    impl Schema for New {
        const KIND: &'static str = "t";
        const WRITER: Writer = Writer::Member;
        const FORMAT: u8 = 2;
        type Part = str;
        type Sort = str;
        type Value = V2;
        fn partition(part: &str) -> String {
            part.into()
        }
    }

    /// A kind whose value changed shape, reading its old format.
    struct Upgraded;
    impl Schema for Upgraded {
        const KIND: &'static str = "t";
        const WRITER: Writer = Writer::Member;
        const FORMAT: u8 = 2;
        type Part = str;
        type Sort = str;
        type Value = V2;
        fn partition(part: &str) -> String {
            part.into()
        }
        fn decode(format: u8, body: &[u8]) -> Result<V2, wire::WireError> {
            match format {
                1 => wire::decode::<V1>(body).map(|v| V2 {
                    a: v.a,
                    b: "old".into(),
                }),
                _ => wire::decode(body),
            }
        }
    }

    #[test]
    fn older_formats_decode_through_the_kinds_own_hook() {
        let v1 = encode_value::<Old>(&V1 { a: 3 });
        assert_eq!(
            decode_value::<Upgraded>(&v1),
            Value::Known(V2 {
                a: 3,
                b: "old".into()
            })
        );
        // Without the hook the old bytes are not the new shape.
        assert!(matches!(decode_value::<New>(&v1), Value::Corrupt(_)));
        let v2 = encode_value::<Upgraded>(&V2 {
            a: 4,
            b: "new".into(),
        });
        assert_eq!(decode_value::<New>(&v2), decode_value::<Upgraded>(&v2));
    }

    #[test]
    fn newer_formats_are_recognised_not_misread() {
        let v1 = encode_value::<Old>(&V1 { a: 7 });
        assert_eq!(decode_value::<Old>(&v1), Value::Known(V1 { a: 7 }));
        let v2 = encode_value::<New>(&V2 {
            a: 7,
            b: "x".into(),
        });
        assert_eq!(decode_value::<Old>(&v2), Value::Newer(2));
        assert!(matches!(decode_value::<Old>(&[]), Value::Corrupt(_)));
        assert!(matches!(decode_value::<Old>(&[1, 0xff]), Value::Corrupt(_)));
        assert_eq!(partition_key::<Old>("x/y"), "t/x/y");
        assert_eq!(partition_key::<Old>(""), "t");
    }
}
