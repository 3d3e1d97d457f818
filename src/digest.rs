//! Content digests (`sha256:<64 hex>`) and canonical JSON.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A validated `sha256:` content digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest {
    hex: String,
}

/// A string that is not a `sha256:<64 lower-case hex>` digest.
#[derive(Debug, thiserror::Error)]
#[error("`{given}` is not a sha256 digest (expected sha256:<64 lower-case hex digits>)")]
pub struct BadDigest {
    pub given: String,
}

impl Digest {
    /// Digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest {
            hex: hex::encode(Sha256::digest(data)),
        }
    }

    /// From a finished hasher.
    pub fn from_hasher(h: Sha256) -> Digest {
        Digest {
            hex: hex::encode(h.finalize()),
        }
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl FromStr for Digest {
    type Err = BadDigest;
    fn from_str(s: &str) -> Result<Digest, BadDigest> {
        let hex = s.strip_prefix("sha256:").unwrap_or("");
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(Digest { hex: hex.to_string() })
        } else {
            Err(BadDigest { given: s.to_string() })
        }
    }
}

impl TryFrom<String> for Digest {
    type Error = BadDigest;
    fn try_from(s: String) -> Result<Digest, BadDigest> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.to_string()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

/// Canonical JSON: object keys sorted, no insignificant white space. The same value always
/// gives the same bytes (and so the same digest).
pub fn canonical_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // serde_json's Value keeps objects in a BTreeMap (the preserve_order feature is off), so
    // a round trip through Value sorts every object's keys.
    let v = serde_json::to_value(value).expect("in-memory JSON values always serialize");
    serde_json::to_vec(&v).expect("in-memory JSON values always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer_and_parse() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        for bad in [
            "",
            "sha256:",
            "sha512:e3b0",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
    }

    #[test]
    fn canonical_json_sorts_keys() {
        #[derive(serde::Serialize)]
        struct S {
            zeta: u8,
            alpha: Vec<u8>,
        }
        assert_eq!(
            canonical_json(&S {
                zeta: 1,
                alpha: vec![2]
            }),
            br#"{"alpha":[2],"zeta":1}"#
        );
    }
}
