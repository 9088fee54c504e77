//! Verifying that a webhook really comes from the provider, before anything it says is used.
//!
//! - Twilio: `X-Twilio-Signature` = base64(HMAC-SHA1(auth token, public URL + each POST param,
//!   sorted by name, as name + value)). Twilio may have signed the URL with or without its
//!   default port, so both forms are tried. Compared in constant time.
//! - SendGrid Event Webhook: ECDSA P-256 / SHA-256 over `timestamp + raw body`, the signature
//!   base64 DER in `X-Twilio-Email-Event-Webhook-Signature`, the key base64 SPKI.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use p256::{
    ecdsa::{Signature, VerifyingKey, signature::Verifier},
    pkcs8::DecodePublicKey,
};
use sha1::Sha1;
use subtle::ConstantTimeEq;

fn twilio_digest(auth_token: &str, url: &str, params: &[(String, String)]) -> Vec<u8> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    // Sorted by name, then value (repeated names such as MediaUrl keep a stable order).
    sorted.sort();
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac.finalize().into_bytes().to_vec()
}

/// The URL with its scheme's default port added, and with any port removed: Twilio signs what
/// it called, and proxies differ in whether the port shows.
fn port_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_owned()];
    let Some((scheme, rest)) = url.split_once("://") else { return variants };
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let default_port = match scheme {
        "https" => "443",
        "http" => "80",
        _ => return variants,
    };
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    };
    let join = |authority: String| {
        if rest.contains('/') { format!("{scheme}://{authority}/{path}") } else { format!("{scheme}://{authority}") }
    };
    for candidate in [join(host.to_owned()), join(format!("{host}:{default_port}"))] {
        if !variants.contains(&candidate) {
            variants.push(candidate);
        }
    }
    variants
}

/// Whether `signature` is Twilio's for this URL and form, signed with `auth_token`.
pub fn twilio_signature_valid(auth_token: &str, url: &str, params: &[(String, String)], signature: &str) -> bool {
    let Ok(given) = STANDARD.decode(signature.trim()) else { return false };
    let mut valid = false;
    for candidate in port_variants(url) {
        let expected = twilio_digest(auth_token, &candidate, params);
        valid |= bool::from(expected.ct_eq(&given));
    }
    valid
}

/// Computes Twilio's signature (what a test, or Twilio, would send).
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    STANDARD.encode(twilio_digest(auth_token, url, params))
}

/// Whether SendGrid signed `timestamp + body` with the key whose base64 SPKI is `public_key`.
pub fn sendgrid_signature_valid(public_key: &str, timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Ok(key_der) = STANDARD.decode(public_key.trim()) else { return false };
    let Ok(key) = VerifyingKey::from_public_key_der(&key_der) else { return false };
    let Ok(signature_der) = STANDARD.decode(signature.trim()) else { return false };
    let Ok(signature) = Signature::from_der(&signature_der) else { return false };
    let mut signed = timestamp.as_bytes().to_vec();
    signed.extend_from_slice(body);
    key.verify(&signed, &signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn twilio_test_vectors_from_its_documentation() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(twilio_signature("12345", url, &params()), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
        assert_eq!(
            twilio_signature("12345", "https://mycompany.com:443/myapp.php?foo=1&bar=2", &params()),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        );
        assert_eq!(
            twilio_signature("12345", "http://mycompany.com:80/myapp.php?foo=1&bar=2", &params()),
            "0ZXoZLH/DfblKGATFgpif+LLRf4="
        );
    }

    #[test]
    fn twilio_signatures_match_with_or_without_the_default_port() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert!(twilio_signature_valid("12345", url, &params(), "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        assert!(twilio_signature_valid("12345", url, &params(), "kvajT1Ptam85bY51eRf/AJRuM3w="));
        assert!(twilio_signature_valid(
            "12345",
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(twilio_signature_valid(
            "12345",
            "http://mycompany.com/myapp.php?foo=1&bar=2",
            &params(),
            "0ZXoZLH/DfblKGATFgpif+LLRf4="
        ));
    }

    #[test]
    fn a_changed_byte_or_token_fails() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let mut changed = params();
        changed[2].1 = "1235".into();
        assert!(!twilio_signature_valid("12345", url, &changed, "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        assert!(!twilio_signature_valid("12346", url, &params(), "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        assert!(!twilio_signature_valid("12345", url, &params(), "not base64!"));
        assert!(!twilio_signature_valid("12345", url, &params(), ""));
    }

    const SENDGRID_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g==";
    const SENDGRID_SIGNATURE: &str =
        "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM=";
    const SENDGRID_BODY: &str = "[{\"email\":\"hello@world.com\",\"event\":\"dropped\",\"reason\":\"Bounced Address\",\"sg_event_id\":\"ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA\",\"sg_message_id\":\"LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0\",\"smtp-id\":\"<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>\",\"timestamp\":1600112492}]\r\n";

    #[test]
    fn sendgrid_test_vector_from_its_documentation() {
        assert!(sendgrid_signature_valid(SENDGRID_KEY, "1600112502", SENDGRID_BODY.as_bytes(), SENDGRID_SIGNATURE));
        assert!(!sendgrid_signature_valid(SENDGRID_KEY, "1600112503", SENDGRID_BODY.as_bytes(), SENDGRID_SIGNATURE));
        let tampered = SENDGRID_BODY.replace("dropped", "dropper");
        assert!(!sendgrid_signature_valid(SENDGRID_KEY, "1600112502", tampered.as_bytes(), SENDGRID_SIGNATURE));
        assert!(!sendgrid_signature_valid("garbage", "1600112502", SENDGRID_BODY.as_bytes(), SENDGRID_SIGNATURE));
    }
}
