//! HS256 JSON Web Tokens, written out: the only algorithm Omega signs or accepts, so `none`
//! and RS/HS confusion are refused by construction.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length")
}

/// Signs `claims` under `header` (which must say `"alg": "HS256"`).
pub fn sign(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let signing_input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let mut mac = mac(secret);
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// The claims of a token signed with HS256 by one of `secrets` (checked in constant time);
/// `None` for anything else: another algorithm, a bad signature, or not a JWT at all.
pub fn verify(token: &str, secrets: &[&[u8]]) -> Option<Value> {
    let mut parts = token.split('.');
    let (header, claims, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    if header["alg"] != "HS256" {
        return None;
    }
    let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
    let signing_input = &token[..token.len() - token.rsplit('.').next()?.len() - 1];
    let valid = secrets.iter().any(|secret| {
        let mut mac = mac(secret);
        mac.update(signing_input.as_bytes());
        mac.verify_slice(&signature).is_ok()
    });
    if !valid {
        return None;
    }
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let header = json!({ "alg": "HS256", "typ": "JWT" });
        let token = sign(&header, &json!({ "sub": "x" }), b"secret-one");
        assert_eq!(verify(&token, &[b"secret-one"]).unwrap()["sub"], "x");
        assert_eq!(verify(&token, &[b"other", b"secret-one"]).unwrap()["sub"], "x", "a previous secret still verifies");
        assert!(verify(&token, &[b"secret-two"]).is_none());
        // alg none, with or without a signature.
        let none =
            format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#), URL_SAFE_NO_PAD.encode(r#"{"sub":"x"}"#));
        assert!(verify(&none, &[b"secret-one"]).is_none());
        // RS256 header over an HMAC signature (the classic confusion).
        let rs = sign(&json!({ "alg": "RS256" }), &json!({ "sub": "x" }), b"secret-one");
        assert!(verify(&rs, &[b"secret-one"]).is_none());
        assert!(verify("a.b", &[b"secret-one"]).is_none());
        assert!(verify(&format!("{token}.extra"), &[b"secret-one"]).is_none());
    }
}
