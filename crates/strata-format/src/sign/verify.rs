//! Verifying detached PKCS#7 / CMS signatures of a verity root hash, as systemd does.

use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier};
use der::asn1::{Any, OctetString};
use der::oid::ObjectIdentifier;
use der::referenced::OwnedToRef;
use der::{Decode, Encode};
use rsa::PublicKey;
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectKeyIdentifier;

use super::{Error, ID_DATA, ID_SIGNED_DATA, PemKind, RSA_ENCRYPTION, SHA_256, algorithm_name};

const ID_SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");

/// Check a detached PKCS#7 / CMS signature (DER) of `content` against `certificate`, the way
/// systemd checks a verity root hash signature (OpenSSL `PKCS7_verify` with the certificate
/// given from outside, `PKCS7_NOINTERN | PKCS7_NOVERIFY`): no certificate chain is built and
/// certificates embedded in the signature are ignored.
///
/// Accepted: a `ContentInfo` holding `SignedData` with detached `id-data` content and exactly
/// one `SignerInfo` that names the certificate (issuer and serial number, or its subject key
/// identifier), digest SHA-256, RSA PKCS#1 v1.5 (`rsaEncryption` or `sha256WithRSAEncryption`).
/// Without signed attributes (what [`Signer::sign`](super::Signer::sign) and systemd-repart
/// write) the signature is over the content itself. With signed attributes (what `openssl smime -sign` writes
/// without `-noattr`) the `contentType` attribute must be `id-data`, the `messageDigest`
/// attribute must be the content's SHA-256, and the signature is over the DER `SET OF` of
/// the attributes (RFC 5652, section 5.4).
pub fn verify_detached(signature_der: &[u8], content: &[u8], certificate: &Certificate) -> Result<(), Error> {
    let malformed = |what| {
        move |source| Error::MalformedSignature {
            what,
            source: Some(source),
        }
    };
    let unsupported = |what: String| Err(Error::UnsupportedSignature { what });
    let info = ContentInfo::from_der(signature_der).map_err(malformed("ContentInfo"))?;
    if info.content_type != ID_SIGNED_DATA {
        return unsupported(format!("content type {} is not SignedData", info.content_type));
    }
    let signed_data: SignedData = info.content.decode_as().map_err(malformed("SignedData"))?;
    if signed_data.encap_content_info.econtent_type != ID_DATA {
        return unsupported(format!(
            "signed content type {} is not id-data",
            signed_data.encap_content_info.econtent_type
        ));
    }
    if signed_data.encap_content_info.econtent.is_some() {
        return unsupported("the signature carries its content; a detached signature was expected".into());
    }
    let signers = signed_data.signer_infos.0.as_slice();
    let [signer] = signers else {
        return unsupported(format!("{} signers; exactly one was expected", signers.len()));
    };
    if signer.digest_alg.oid != SHA_256 {
        return unsupported(format!("digest algorithm {} is not SHA-256", signer.digest_alg.oid));
    }
    let algorithm = signer.signature_algorithm.oid;
    if algorithm != RSA_ENCRYPTION && algorithm != ID_SHA256_WITH_RSA {
        return unsupported(format!(
            "signature algorithm {} is not RSA PKCS#1 v1.5",
            algorithm_name(algorithm)
        ));
    }

    let tbs = certificate.tbs_certificate();
    let subject = || tbs.subject().to_string();
    let names_certificate = match &signer.sid {
        SignerIdentifier::IssuerAndSerialNumber(id) => {
            &id.issuer == tbs.issuer() && &id.serial_number == tbs.serial_number()
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => tbs
            .get_extension::<SubjectKeyIdentifier>()
            .ok()
            .flatten()
            .is_some_and(|(_, own)| own == *ski),
    };
    if !names_certificate {
        return Err(Error::SignerNotCertificate { subject: subject() });
    }
    let spki = tbs.subject_public_key_info();
    if spki.algorithm.oid != RSA_ENCRYPTION {
        return Err(Error::UnsupportedKeyAlgorithm {
            source_kind: PemKind::Certificate,
            algorithm: algorithm_name(spki.algorithm.oid),
        });
    }
    let public = PublicKey::try_from(spki.owned_to_ref()).map_err(Error::InvalidCertificateKey)?;
    let verifier = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(public);
    let signature = rsa::pkcs1v15::Signature::try_from(signer.signature.as_bytes()).map_err(Error::SignatureInvalid)?;

    let signed_bytes = match &signer.signed_attrs {
        None => content.to_vec(),
        Some(attrs) => {
            let single = |oid: ObjectIdentifier| -> Result<Option<&Any>, Error> {
                let mut found = attrs.iter().filter(|a| a.oid == oid);
                match (found.next(), found.next()) {
                    (None, _) => Ok(None),
                    (Some(a), None) if a.values.len() == 1 => Ok(a.values.get(0)),
                    _ => Err(Error::UnsupportedSignature {
                        what: format!("attribute {oid} must appear once with one value"),
                    }),
                }
            };
            let content_type = single(ID_CONTENT_TYPE)?
                .map(|v| v.decode_as::<ObjectIdentifier>())
                .transpose()
                .map_err(malformed("contentType attribute"))?;
            if content_type != Some(ID_DATA) {
                return unsupported("the signed contentType attribute is missing or not id-data".into());
            }
            let Some(digest) = single(ID_MESSAGE_DIGEST)? else {
                return unsupported("signed attributes without a messageDigest".into());
            };
            let digest: OctetString = digest.decode_as().map_err(malformed("messageDigest attribute"))?;
            if digest.as_bytes() != Sha256::digest(content).as_slice() {
                return Err(Error::MessageDigestMismatch);
            }
            // The signature covers the attributes as a DER SET OF, not with the [0] tag
            // they carry inside SignerInfo.
            attrs.to_der().map_err(malformed("signed attributes"))?
        }
    };
    rsa::signature::Verifier::verify(&verifier, &signed_bytes, &signature).map_err(Error::SignatureInvalid)
}
