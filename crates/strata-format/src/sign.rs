//! Signing the dm-verity root hash of a system extension, the way systemd checks it.
//!
//! systemd (`systemd-dissect`, `systemd-sysext`) reads a PKCS#7 detached signature of the
//! root hash, written as lowercase hex, and verifies it with OpenSSL against the
//! certificates in `/etc/verity.d/` (`PKCS7_NOINTERN | PKCS7_NOVERIFY`): the signer is found
//! by issuer and serial number, the certificate is not taken from the signature.
//! `systemd-repart` writes such signatures with `PKCS7_DETACHED | PKCS7_NOATTR |
//! PKCS7_BINARY`, which is what `openssl smime -sign -nocerts -noattr -binary` writes; we
//! write the same bytes (RSA PKCS#1 v1.5 with SHA-256 is deterministic).
//!
//! Keys are RSA, as `mkosi genkey` makes them; a development key is RSA 2048 with a
//! self-signed certificate.
//!
//! The `cms` crate provides the ASN.1 types; its `SignedDataBuilder` always adds signed
//! attributes (content type, message digest), so the `SignedData` is assembled here.
//!
//! Checking such signatures ([`verify_detached`]) lives in the private `verify` submodule.

use std::time::SystemTime;

use cms::cert::IssuerAndSerialNumber;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos};
use der::asn1::{Any, OctetString, SetOfVec};
use der::oid::ObjectIdentifier;
use der::referenced::OwnedToRef;
use der::{Decode, Encode, EncodePem};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding, PrivateKeyInfoRef};
use rsa::signature::Signer as _;
use rsa::{PrivateKey, PublicKey};
use sha2::{Digest, Sha256};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
/// The certificate type of [`load_certificate`] and [`verify_detached`], re-exported so that
/// callers need no direct `x509-cert` dependency.
pub use x509_cert::Certificate;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier};
use x509_cert::ext::{Extension, ToExtension};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

mod verify;

pub use verify::verify_detached;

/// Size of a development key's RSA modulus.
pub const DEV_KEY_BITS: usize = 2048;

/// The RSA modulus sizes strata can sign and verify with (what the `rsa` crate accepts).
pub const KEY_BITS: std::ops::RangeInclusive<usize> = PublicKey::MIN_SIZE..=PublicKey::MAX_SIZE;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SHA_256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");

/// What a PEM input was supposed to hold, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemKind {
    /// A private key.
    PrivateKey,
    /// An X.509 certificate.
    Certificate,
}

impl std::fmt::Display for PemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PemKind::PrivateKey => "private key",
            PemKind::Certificate => "certificate",
        })
    }
}

/// Errors from making keys, loading them, and signing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input is empty.
    #[error("the file is empty; expected a PEM {expected}")]
    Empty { expected: PemKind },
    /// The input has no PEM block at all (it may be DER, or something else entirely).
    #[error(
        "the file holds no PEM {expected} (no `-----BEGIN` line){}",
        match expected {
            PemKind::PrivateKey => "; convert a DER key with `openssl pkey -inform der`",
            PemKind::Certificate => "; convert a DER certificate with `openssl x509 -inform der`",
        }
    )]
    NoPem { expected: PemKind },
    /// The input has a PEM header but does not decode as PEM.
    #[error("the PEM {expected} does not decode")]
    NotPem {
        expected: PemKind,
        #[source]
        source: der::pem::Error,
    },
    /// The PEM block is something else than a private key (`label` is what it says it is).
    #[error("expected a private key, found a PEM block labelled `{label}`")]
    NotAKey { label: String },
    /// The PEM block is something else than a certificate.
    #[error("expected a certificate, found a PEM block labelled `{label}`")]
    NotACertificate { label: String },
    /// The private key is encrypted; strata needs it unencrypted.
    #[error("the private key is encrypted; decrypt it first (openssl pkey -in KEY -out PLAIN)")]
    EncryptedKey,
    /// The key (or the certificate's public key) is not RSA.
    #[error("the {source_kind} holds a {algorithm} key; only RSA keys are supported")]
    UnsupportedKeyAlgorithm { source_kind: PemKind, algorithm: String },
    /// An RSA key of a size strata cannot sign or verify with.
    #[error(
        "the {source_kind} holds a {bits}-bit RSA key; strata needs {} to {} bits (`strata keygen` makes {DEV_KEY_BITS})",
        KEY_BITS.start(),
        KEY_BITS.end()
    )]
    KeySize { source_kind: PemKind, bits: usize },
    /// The DER inside the PEM block does not parse.
    #[error("malformed {expected}")]
    Malformed {
        expected: PemKind,
        #[source]
        source: der::Error,
    },
    /// The PKCS#8 `PRIVATE KEY` block does not hold a valid RSA key.
    #[error("invalid PKCS#8 RSA private key")]
    InvalidPkcs8Key(#[source] rsa::pkcs8::Error),
    /// The PKCS#1 `RSA PRIVATE KEY` block does not hold a valid RSA key.
    #[error("invalid PKCS#1 RSA private key")]
    InvalidPkcs1Key(#[source] rsa::pkcs1::Error),
    /// The certificate's RSA public key does not parse.
    #[error("invalid RSA public key in the certificate")]
    InvalidCertificateKey(#[source] spki::Error),
    /// The private key does not belong to the certificate.
    #[error("the private key does not match the certificate `{subject}`")]
    KeyCertificateMismatch { subject: String },
    /// Generating a key or random serial number failed.
    #[error("generating a key")]
    KeyGeneration(#[source] rsa::Error),
    /// The operating system's random number generator failed.
    #[error("reading random bytes")]
    Random(#[source] getrandom::Error),
    /// The validity time cannot be written in a certificate.
    #[error("certificate validity time {time:?} is out of range")]
    InvalidTime {
        time: SystemTime,
        #[source]
        source: der::Error,
    },
    /// Building or signing the certificate failed.
    #[error("building the certificate")]
    Certificate(#[source] x509_cert::builder::Error),
    /// Encoding DER or PEM failed.
    #[error("encoding {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: der::Error,
    },
    /// Encoding the private key as PKCS#8 failed.
    #[error("encoding the private key")]
    EncodeKey(#[source] rsa::pkcs8::Error),
    /// RSA signing failed.
    #[error("signing")]
    Sign(#[source] rsa::signature::Error),
    /// The signature is not a DER-encoded PKCS#7 / CMS `SignedData`.
    #[error("the signature is not DER PKCS#7 SignedData ({what})")]
    MalformedSignature {
        what: &'static str,
        #[source]
        source: Option<der::Error>,
    },
    /// The signature is something [`verify_detached`] does not check (more than one signer,
    /// embedded content, another digest or signature algorithm).
    #[error("unsupported signature: {what}")]
    UnsupportedSignature { what: String },
    /// The signature names another signer than the certificate (issuer and serial number, or
    /// subject key identifier).
    #[error("the signature was made by another signer than the certificate `{subject}`")]
    SignerNotCertificate { subject: String },
    /// The signed `messageDigest` attribute is not the content's digest.
    #[error("the signed message digest is not the SHA-256 of the content")]
    MessageDigestMismatch,
    /// The RSA signature does not verify with the certificate's key.
    #[error("the RSA signature does not verify with the certificate's public key")]
    SignatureInvalid(#[source] rsa::signature::Error),
}

/// A private key and certificate pair as PEM text.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    /// The private key, PKCS#8 (`-----BEGIN PRIVATE KEY-----`).
    pub key_pem: String,
    /// The self-signed certificate (`-----BEGIN CERTIFICATE-----`).
    pub certificate_pem: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("certificate_pem", &self.certificate_pem)
            .finish_non_exhaustive()
    }
}

/// Self-signed certificate profile: subject = issuer = `CN=<name>`, a CA (so OpenSSL accepts
/// it as its own trust anchor) that may sign, with key identifiers.
struct SelfSigned {
    subject: Name,
}

impl BuilderProfile for SelfSigned {
    fn get_issuer(&self, subject: &Name) -> Name {
        subject.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        spk: spki::SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: spki::SubjectPublicKeyInfoRef<'_>,
        tbs: &x509_cert::TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let ski = SubjectKeyIdentifier::try_from(spk)?;
        let mut extensions = Vec::new();
        let basic = BasicConstraints {
            ca: true,
            path_len_constraint: None,
        };
        extensions.push(basic.to_extension(tbs.subject(), &extensions)?);
        let usage = KeyUsage(KeyUsages::DigitalSignature | KeyUsages::KeyCertSign);
        extensions.push(usage.to_extension(tbs.subject(), &extensions)?);
        let aki = AuthorityKeyIdentifier {
            key_identifier: Some(ski.0.clone()),
            ..Default::default()
        };
        extensions.push(aki.to_extension(tbs.subject(), &extensions)?);
        extensions.push(ski.to_extension(tbs.subject(), &extensions)?);
        Ok(extensions)
    }
}

fn subject_name(cn: &str) -> Result<Name, Error> {
    let encode = |source| Error::Encode {
        what: "certificate subject",
        source,
    };
    let value = Any::new(der::Tag::Utf8String, cn.as_bytes()).map_err(encode)?;
    let attr = x509_cert::attr::AttributeTypeAndValue {
        oid: COMMON_NAME,
        value,
    };
    let rdn = RelativeDistinguishedName::try_from(vec![attr]).map_err(encode)?;
    let mut seq = RdnSequence::default();
    seq.push(rdn);
    // `Name` is built by decoding, which checks the sequence; there is no safe constructor.
    Name::from_der(&seq.to_der().map_err(encode)?).map_err(encode)
}

/// Make a development signing key: RSA 2048 and a self-signed certificate for
/// `CN=<common_name>`, valid from `not_before` to `not_after`. The key and serial number
/// are random.
pub fn generate_dev_key(common_name: &str, not_before: SystemTime, not_after: SystemTime) -> Result<KeyPair, Error> {
    let key = PrivateKey::new(&mut getrandom::SysRng, DEV_KEY_BITS).map_err(Error::KeyGeneration)?;
    let mut serial = [0u8; 16];
    getrandom::fill(&mut serial).map_err(Error::Random)?;
    serial[0] = (serial[0] & 0x7f) | 0x40; // positive, and never a shorter encoding
    let serial = SerialNumber::new(&serial).map_err(|source| Error::Encode {
        what: "serial number",
        source,
    })?;
    let time = |t: SystemTime| Time::try_from(t).map_err(|source| Error::InvalidTime { time: t, source });
    let validity = Validity::new(time(not_before)?, time(not_after)?);
    let spki = SubjectPublicKeyInfoOwned::from_key(&key.to_public_key())
        .map_err(|source| Error::Certificate(source.into()))?;
    let profile = SelfSigned {
        subject: subject_name(common_name)?,
    };
    let builder = CertificateBuilder::new(profile, serial, validity, spki).map_err(Error::Certificate)?;
    let signer = SigningKey::<Sha256>::new(key.clone());
    let cert = builder
        .build::<_, rsa::pkcs1v15::Signature>(&signer)
        .map_err(Error::Certificate)?;
    let certificate_pem = cert.to_pem(LineEnding::LF).map_err(|source| Error::Encode {
        what: "certificate",
        source,
    })?;
    let key_pem = key.to_pkcs8_pem(LineEnding::LF).map_err(Error::EncodeKey)?.to_string();
    Ok(KeyPair {
        key_pem,
        certificate_pem,
    })
}

/// A private key with its certificate, ready to sign.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey<Sha256>,
    certificate: Certificate,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("subject", &self.certificate.tbs_certificate().subject().to_string())
            .finish()
    }
}

fn pem(input: &[u8], expected: PemKind) -> Result<(String, Vec<u8>), Error> {
    if input.trim_ascii().is_empty() {
        return Err(Error::Empty { expected });
    }
    if !input.windows(10).any(|w| w == b"-----BEGIN") {
        return Err(Error::NoPem { expected });
    }
    let (label, der) = der::pem::decode_vec(input).map_err(|source| Error::NotPem { expected, source })?;
    Ok((label.to_owned(), der))
}

/// Algorithm name for an error message.
fn algorithm_name(oid: ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "1.2.840.10045.2.1" => "ECDSA".into(),
        "1.2.840.10040.4.1" => "DSA".into(),
        "1.3.101.112" => "Ed25519".into(),
        "1.3.101.113" => "Ed448".into(),
        "1.2.840.113549.1.1.10" => "RSA-PSS".into(),
        other => format!("OID {other}"),
    }
}

/// Load an unencrypted RSA private key from PEM (PKCS#8 `PRIVATE KEY` or PKCS#1
/// `RSA PRIVATE KEY`).
pub fn load_private_key(pem_bytes: &[u8]) -> Result<PrivateKey, Error> {
    let (label, der) = pem(pem_bytes, PemKind::PrivateKey)?;
    let malformed = |source| Error::Malformed {
        expected: PemKind::PrivateKey,
        source,
    };
    match label.as_str() {
        "PRIVATE KEY" => {
            let info = PrivateKeyInfoRef::from_der(&der).map_err(malformed)?;
            if info.algorithm.oid != RSA_ENCRYPTION {
                let algorithm = algorithm_name(info.algorithm.oid);
                return Err(Error::UnsupportedKeyAlgorithm {
                    source_kind: PemKind::PrivateKey,
                    algorithm,
                });
            }
            PrivateKey::from_pkcs8_der(&der)
                .map_err(Error::InvalidPkcs8Key)
                .and_then(private_key_size)
        }
        "RSA PRIVATE KEY" => PrivateKey::from_pkcs1_der(&der)
            .map_err(Error::InvalidPkcs1Key)
            .and_then(private_key_size),
        "ENCRYPTED PRIVATE KEY" => Err(Error::EncryptedKey),
        "EC PRIVATE KEY" | "DSA PRIVATE KEY" | "OPENSSH PRIVATE KEY" => Err(Error::UnsupportedKeyAlgorithm {
            source_kind: PemKind::PrivateKey,
            algorithm: label.trim_end_matches(" PRIVATE KEY").to_owned(),
        }),
        _ => Err(Error::NotAKey { label }),
    }
}

/// A private key of a size strata can sign with (the `rsa` crate loads smaller ones).
fn private_key_size(key: PrivateKey) -> Result<PrivateKey, Error> {
    let bits = rsa::traits::PublicKeyParts::n(&key).bit_width() as usize;
    if KEY_BITS.contains(&bits) {
        Ok(key)
    } else {
        Err(Error::KeySize {
            source_kind: PemKind::PrivateKey,
            bits,
        })
    }
}

/// A certificate whose RSA public key strata can use; an RSA key of another size is named
/// by its size here, not later as a key that "does not parse". Keys of other algorithms are
/// refused where they are used.
fn certificate_key_size(certificate: Certificate) -> Result<Certificate, Error> {
    let spki = certificate.tbs_certificate().subject_public_key_info();
    if spki.algorithm.oid != RSA_ENCRYPTION {
        return Ok(certificate);
    }
    if let Err(e) = PublicKey::try_from(spki.owned_to_ref()) {
        let modulus = spki
            .subject_public_key
            .as_bytes()
            .and_then(|b| rsa::pkcs1::RsaPublicKey::<der::asn1::UintRef>::from_der(b).ok())
            .map(|k| k.modulus.as_bytes().to_vec());
        return Err(match modulus {
            Some(n) => {
                // DER integers are minimal (UintRef drops the sign byte): the first byte is
                // the top one.
                let bits = n.first().map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize);
                if KEY_BITS.contains(&bits) {
                    Error::InvalidCertificateKey(e)
                } else {
                    Error::KeySize {
                        source_kind: PemKind::Certificate,
                        bits,
                    }
                }
            }
            None => Error::InvalidCertificateKey(e),
        });
    }
    Ok(certificate)
}

/// Load an X.509 certificate from PEM.
pub fn load_certificate(pem_bytes: &[u8]) -> Result<Certificate, Error> {
    let (label, der) = pem(pem_bytes, PemKind::Certificate)?;
    if label != "CERTIFICATE" {
        return Err(Error::NotACertificate { label });
    }
    Certificate::from_der(&der)
        .map_err(|source| Error::Malformed {
            expected: PemKind::Certificate,
            source,
        })
        .and_then(certificate_key_size)
}

impl Signer {
    /// Load a signer from a PEM private key and PEM certificate, checking they are a pair.
    pub fn from_pem(key_pem: &[u8], certificate_pem: &[u8]) -> Result<Signer, Error> {
        let key = load_private_key(key_pem)?;
        let certificate = load_certificate(certificate_pem)?;
        Signer::new(key, certificate)
    }

    /// A signer from a key and its certificate; fails if the certificate is for another key.
    pub fn new(key: PrivateKey, certificate: Certificate) -> Result<Signer, Error> {
        let spki = certificate.tbs_certificate().subject_public_key_info();
        if spki.algorithm.oid != RSA_ENCRYPTION {
            let algorithm = algorithm_name(spki.algorithm.oid);
            return Err(Error::UnsupportedKeyAlgorithm {
                source_kind: PemKind::Certificate,
                algorithm,
            });
        }
        let cert_key = PublicKey::try_from(spki.owned_to_ref()).map_err(Error::InvalidCertificateKey)?;
        if cert_key != key.to_public_key() {
            let subject = certificate.tbs_certificate().subject().to_string();
            return Err(Error::KeyCertificateMismatch { subject });
        }
        Ok(Signer {
            key: SigningKey::new(key),
            certificate,
        })
    }

    /// The signer's certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    /// The PKCS#7 detached signature of `content` (for a sysext: the root hash in lowercase
    /// hex, no newline), DER-encoded: SHA-256, RSA PKCS#1 v1.5, no signed attributes, no
    /// certificates, the signer named by issuer and serial number. The same bytes as
    /// `openssl smime -sign -nocerts -noattr -binary -outform der`.
    pub fn sign(&self, content: &[u8]) -> Result<Vec<u8>, Error> {
        let encode = |what| move |source| Error::Encode { what, source };
        let null = || Some(Any::null());
        let sha256 = AlgorithmIdentifierOwned {
            oid: SHA_256,
            parameters: null(),
        };
        let signature = self.key.try_sign(content).map_err(Error::Sign)?;
        let tbs = self.certificate.tbs_certificate();
        let signer_info = SignerInfo {
            version: CmsVersion::V1,
            sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: tbs.issuer().clone(),
                serial_number: tbs.serial_number().clone(),
            }),
            digest_alg: sha256.clone(),
            signed_attrs: None,
            signature_algorithm: AlgorithmIdentifierOwned {
                oid: RSA_ENCRYPTION,
                parameters: null(),
            },
            signature: OctetString::new(Box::<[u8]>::from(signature)).map_err(encode("signature"))?,
            unsigned_attrs: None,
        };
        let signed_data = SignedData {
            version: CmsVersion::V1,
            digest_algorithms: SetOfVec::try_from(vec![sha256]).map_err(encode("digest algorithms"))?,
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: ID_DATA,
                econtent: None,
            },
            certificates: None,
            crls: None,
            signer_infos: SignerInfos(SetOfVec::try_from(vec![signer_info]).map_err(encode("signer infos"))?),
        };
        let content = Any::encode_from(&signed_data).map_err(encode("signed data"))?;
        ContentInfo {
            content_type: ID_SIGNED_DATA,
            content,
        }
        .to_der()
        .map_err(encode("content info"))
    }
}

/// Load an X.509 certificate from PEM or DER (DER when the input does not start with a PEM
/// header).
pub fn load_certificate_pem_or_der(bytes: &[u8]) -> Result<Certificate, Error> {
    if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        return load_certificate(bytes);
    }
    if bytes.trim_ascii().is_empty() {
        return Err(Error::Empty {
            expected: PemKind::Certificate,
        });
    }
    Certificate::from_der(bytes)
        .map_err(|source| Error::Malformed {
            expected: PemKind::Certificate,
            source,
        })
        .and_then(certificate_key_size)
}

/// SHA-256 of the certificate's DER encoding, lowercase hex (what `openssl x509 -fingerprint
/// -sha256` shows, without the colons).
pub fn certificate_fingerprint(certificate: &Certificate) -> Result<String, Error> {
    let der = certificate.to_der().map_err(|source| Error::Encode {
        what: "certificate",
        source,
    })?;
    Ok(Sha256::digest(&der).iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;
    use std::time::Duration;

    /// One generated key for all tests: RSA key generation is slow in debug builds.
    fn dev_key() -> &'static KeyPair {
        static KEY: OnceLock<KeyPair> = OnceLock::new();
        KEY.get_or_init(|| {
            let from = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            generate_dev_key("strata test, \"quoted\"", from, from + Duration::from_secs(86400 * 365)).unwrap()
        })
    }

    /// A 512-bit RSA key (`openssl req -x509 -newkey rsa:512`): loads in the `rsa` crate, too small to use.
    const RSA_512_KEY: &str = "-----BEGIN PRIVATE KEY-----\n\
MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEAt/Vj39el11y/lDh1\n\
mryGcOgPD5JrnjwZUMA3ALrXTFfSen852N+TmROeuTeipNd34Id1D4TaIOjSfVRW\n\
IKM8ZwIDAQABAkEAlyAxfKNcyyCXAt2fQA/BIuCB/vj7EHOvGHfQt/jHBx94o9HA\n\
w/Ua07pwJmfxL/gaYQ6EFFeFp/v2Ja+yOyQqAQIhAO/J9avwK4UBos3KC9JZB4/0\n\
wRmXEe5KyI0lv6795gMXAiEAxGUr4aSWFp0fFznDtC+ejwTqA1wEVVuiS7mKWESj\n\
ozECIQClLZDvDPVdnP/iFJFKKAv+jVJLZ3ZxmNBH8r31NG8ypwIgIcFByYaARWK7\n\
9UH4YP/OQMaXcfxewkz9mAZLwOALQAECIFT05e2VT+0wgCpyqIMxWgUv9vzdHW4x\n\
/SrNYw9dTV68\n\
-----END PRIVATE KEY-----\n";

    /// The self-signed certificate of [`RSA_512_KEY`].
    const RSA_512_CERT: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBdzCCASGgAwIBAgIUEHII1Yqs9Yjo8x2pjOUHmnrqvOcwDQYJKoZIhvcNAQEL\n\
BQAwEDEOMAwGA1UEAwwFc21hbGwwHhcNMjYxMjA0MTk1MTE5WhcNMjYxMjE0MTk1\n\
MTE5WjAQMQ4wDAYDVQQDDAVzbWFsbDBcMA0GCSqGSIb3DQEBAQUAA0sAMEgCQQC3\n\
9WPf16XXXL+UOHWavIZw6A8PkmuePBlQwDcAutdMV9J6fznY35OZE565N6Kk13fg\n\
h3UPhNog6NJ9VFYgozxnAgMBAAGjUzBRMB0GA1UdDgQWBBQy4D+mCrkXDbfd5djm\n\
gih1ToUfNTAfBgNVHSMEGDAWgBQy4D+mCrkXDbfd5djmgih1ToUfNTAPBgNVHRMB\n\
Af8EBTADAQH/MA0GCSqGSIb3DQEBCwUAA0EAkdG68IQIZegDgONmhTdJTMSfJBi/\n\
ZlR02yPRrS2T3Uq/+kunuX6BXYLP4MsLx8PEc/Vz5qSdw/rF3sxukGfl0g==\n\
-----END CERTIFICATE-----\n";

    const ED25519_KEY: &str = "-----BEGIN PRIVATE KEY-----\n\
        MC4CAQAwBQYDK2VwBCIEIAlKRhdZq1lWTfyb/BtyfkR3rWdkpwO4qvrOntfxeuux\n\
        -----END PRIVATE KEY-----\n";

    #[test]
    fn signs_deterministically_in_the_shape_systemd_reads() {
        let pair = dev_key();
        let signer = Signer::from_pem(pair.key_pem.as_bytes(), pair.certificate_pem.as_bytes()).unwrap();
        let root_hash = b"5d1e0e8bd1e8e2b4c1b2bd0b09a9ea4b6e9c2e0a1f5f3d7c8b9a0e1f2d3c4b5a";
        let der = signer.sign(root_hash).unwrap();
        assert_eq!(
            der,
            signer.sign(root_hash).unwrap(),
            "PKCS#1 v1.5 signatures are deterministic"
        );
        assert_ne!(der, signer.sign(b"another root hash").unwrap());

        let info = ContentInfo::from_der(&der).unwrap();
        assert_eq!(info.content_type, ID_SIGNED_DATA);
        let sd: SignedData = info.content.decode_as().unwrap();
        assert!(sd.certificates.is_none(), "no embedded certificates");
        assert_eq!(sd.encap_content_info.econtent, None, "detached");
        assert_eq!(sd.encap_content_info.econtent_type, ID_DATA);
        let si = sd.signer_infos.0.get(0).unwrap();
        assert!(si.signed_attrs.is_none(), "no signed attributes");
        let SignerIdentifier::IssuerAndSerialNumber(id) = &si.sid else {
            panic!("signer by issuer and serial")
        };
        assert_eq!(&id.issuer, signer.certificate().tbs_certificate().issuer());
        assert_eq!(
            &id.serial_number,
            signer.certificate().tbs_certificate().serial_number()
        );

        // The signature is over the content itself, verifiable with the certificate's key.
        let spki = signer
            .certificate()
            .tbs_certificate()
            .subject_public_key_info()
            .owned_to_ref();
        let public = PublicKey::try_from(spki).unwrap();
        let verifier = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(public);
        let sig = rsa::pkcs1v15::Signature::try_from(si.signature.as_bytes()).unwrap();
        rsa::signature::Verifier::verify(&verifier, root_hash, &sig).unwrap();
        assert!(rsa::signature::Verifier::verify(&verifier, b"tampered", &sig).is_err());
    }

    #[test]
    fn generated_certificate_names_and_dates_are_the_callers() {
        let cert = load_certificate(dev_key().certificate_pem.as_bytes()).unwrap();
        let tbs = cert.tbs_certificate();
        assert_eq!(tbs.subject(), tbs.issuer(), "self-signed");
        let cn = tbs.subject().common_name().unwrap().unwrap();
        assert!(
            matches!(cn, x509_cert::ext::pkix::name::DirectoryString::Utf8String(ref s) if s == "strata test, \"quoted\""),
            "{cn:?}"
        );
        let not_before = tbs.validity().not_before.to_system_time();
        assert_eq!(not_before, SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let fingerprint = certificate_fingerprint(&cert).unwrap();
        assert_eq!(fingerprint.len(), 64);
        assert!(
            fingerprint
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        let key = load_private_key(dev_key().key_pem.as_bytes()).unwrap();
        assert_eq!(rsa::traits::PublicKeyParts::size(&key), DEV_KEY_BITS / 8);
    }

    #[test]
    fn loading_reports_what_is_wrong() {
        let pair = dev_key();
        let (key, cert) = (pair.key_pem.as_bytes(), pair.certificate_pem.as_bytes());
        assert!(matches!(
            load_private_key(b"not pem"),
            Err(Error::NoPem {
                expected: PemKind::PrivateKey,
            })
        ));
        assert!(matches!(load_private_key(cert), Err(Error::NotAKey { label }) if label == "CERTIFICATE"));
        assert!(matches!(load_certificate(key), Err(Error::NotACertificate { label }) if label == "PRIVATE KEY"));
        assert!(matches!(
            load_private_key(ED25519_KEY.as_bytes()),
            Err(Error::UnsupportedKeyAlgorithm { source_kind: PemKind::PrivateKey, algorithm }) if algorithm == "Ed25519"
        ));
        let encrypted = b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(matches!(load_private_key(encrypted), Err(Error::EncryptedKey)));
        let garbage = b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            load_certificate(garbage),
            Err(Error::Malformed {
                expected: PemKind::Certificate,
                ..
            })
        ));

        // A key that is not the certificate's.
        let other = PrivateKey::new(&mut getrandom::SysRng, 1024).unwrap();
        let other_pem = other.to_pkcs8_pem(LineEnding::LF).unwrap();
        let err = Signer::from_pem(other_pem.as_bytes(), cert).unwrap_err();
        assert!(
            matches!(err, Error::KeyCertificateMismatch { ref subject } if subject.contains("strata test")),
            "{err}"
        );
        Signer::from_pem(key, cert).unwrap();
    }

    /// What the user reads: an empty file is empty (not "a NUL byte"), text without PEM
    /// says so, and a too-small key is named by its size (not as a key that does not match).
    #[test]
    fn messages_say_what_is_wrong_with_the_file() {
        let show = |e: Error| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text += &format!(": {s}");
                source = s.source();
            }
            text
        };
        let cases: [(Result<(), Error>, &str); 8] = [
            (
                load_private_key(b"").map(drop),
                "the file is empty; expected a PEM private key",
            ),
            (load_private_key(b"\n  \n").map(drop), "the file is empty"),
            (
                load_certificate(b"").map(drop),
                "the file is empty; expected a PEM certificate",
            ),
            (
                load_certificate_pem_or_der(b"").map(drop),
                "the file is empty; expected a PEM certificate",
            ),
            (
                load_private_key(b"hello\n").map(drop),
                "the file holds no PEM private key (no `-----BEGIN` line); convert a DER key",
            ),
            (
                load_certificate(b"hello\n").map(drop),
                "the file holds no PEM certificate (no `-----BEGIN` line)",
            ),
            (
                load_private_key(RSA_512_KEY.as_bytes()).map(drop),
                "the private key holds a 512-bit RSA key; strata needs 1024 to 8192 bits (`strata keygen` makes 2048)",
            ),
            (
                load_certificate(RSA_512_CERT.as_bytes()).map(drop),
                "the certificate holds a 512-bit RSA key; strata needs 1024 to 8192 bits",
            ),
        ];
        for (result, want) in cases {
            let text = show(result.unwrap_err());
            assert!(text.contains(want), "want {want:?} in {text:?}");
            assert!(!text.contains("NUL byte") && !text.contains("PrivateKey"), "{text}");
        }
    }
}
