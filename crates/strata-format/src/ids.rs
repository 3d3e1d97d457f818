//! Identifiers derived from content: the one way strata makes a UUID that two builds of the
//! same input agree on (file system UUIDs, the verity superblock UUID, GPT GUIDs).
//!
//! The UUID is the first 16 bytes of the SHA-256 of the input, with the version (4) and
//! variant (RFC 4122) bits set, as `uuid::Builder::from_random_bytes` sets them: it looks
//! like any random UUID, and nothing can tell it was derived. Callers that need several
//! UUIDs from one input put a purpose string in front of it.
//!
//! (The DDI partition UUIDs are *not* made here: systemd matches them against the halves
//! of the root hash, byte for byte, without the v4 bits; see [`crate::ddi`].)

use sha2::{Digest as _, Sha256};
use uuid::Uuid;

/// A version-4-layout UUID from the SHA-256 of `parts`, concatenated.
pub fn content_uuid<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Uuid {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    let digest = h.finalize();
    uuid::Builder::from_random_bytes(digest[..16].try_into().expect("16 bytes")).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `products::sysext::content_uuid` did by hand before it used this function.
    fn by_hand(data: &[u8]) -> String {
        let mut b: [u8; 16] = Sha256::digest(data)[..16].try_into().unwrap();
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let hex = hex::encode(b);
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    }

    #[test]
    fn known_answers() {
        // sha256("strata") = 82ba7e1f6f4171d3648b…, with the version and variant bits set.
        assert_eq!(
            content_uuid([b"strata".as_slice()]).to_string(),
            "82ba7e1f-6f41-41d3-a48b-b4f785ca3199"
        );
        assert_eq!(
            content_uuid([b"".as_slice()]).to_string(),
            "e3b0c442-98fc-4c14-9afb-f4c8996fb924"
        );
        for data in [b"".as_slice(), b"strata", b"strata2", &[0u8; 1000]] {
            assert_eq!(content_uuid([data]).to_string(), by_hand(data));
        }
    }

    /// The GPT disk GUID (`ddi::derived_uuid`) and the verity superblock UUID
    /// (`sysext::verity_params`), the old way: hashers chained by hand.
    #[test]
    fn ddi_and_verity_uuids_known_answers() {
        let root_hash: Vec<u8> = (0..32).collect();
        let old_disk = Sha256::new()
            .chain_update(b"strata ddi ")
            .chain_update("disk")
            .chain_update([0])
            .chain_update(&root_hash)
            .finalize();
        let old_disk = uuid::Builder::from_random_bytes(old_disk[..16].try_into().unwrap()).into_uuid();
        let disk = content_uuid([b"strata ddi ".as_slice(), b"disk", &[0], &root_hash]);
        assert_eq!(disk, old_disk);
        assert_eq!(disk.to_string(), "02570cdc-f184-43c3-814a-0fc1f1645bb7");

        let fs = Sha256::digest(b"fs");
        let old_verity = Sha256::new()
            .chain_update("strata verity uuid")
            .chain_update([0])
            .chain_update(fs)
            .finalize();
        let old_verity = uuid::Builder::from_random_bytes(old_verity[..16].try_into().unwrap()).into_uuid();
        let verity = content_uuid([b"strata verity uuid".as_slice(), &[0], &fs]);
        assert_eq!(verity, old_verity);
        assert_eq!(verity.to_string(), "48807338-d08d-4d1b-9831-a8e654b92ff5");
    }

    #[test]
    fn parts_are_concatenated() {
        let whole = content_uuid([b"strata ddi disk\0root".as_slice()]);
        let parts = content_uuid([b"strata ddi ".as_slice(), b"disk", &[0], b"root"]);
        assert_eq!(whole, parts);
        assert_eq!(parts.get_version_num(), 4);
        assert_eq!(parts.get_variant(), uuid::Variant::RFC4122);
    }
}
