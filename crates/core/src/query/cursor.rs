//! The pagination cursor: the sort key of the last row of a page, bound to the query it came from and
//! signed.
//!
//! Token = URL-safe base64 without padding of `body ‖ tag`, where `body` is compact JSON
//! `{"q":"<first 16 bytes of the query hash, hex>","k":[<sort values>]}` and
//! `tag = HMAC-SHA256(secret, "eventgate-cursor-v1" ‖ 0x00 ‖ body)`. The signature is checked (in constant
//! time) before anything in the body is looked at. Values: `null`, `{"u":"<uuid>"}`, `{"s":"<text>"}`,
//! `{"n":"<decimal>"}`, `{"b":true}`, `{"t":<microseconds since the epoch>}`.
//!
//! The cursor is opaque but not secret: it holds values of the last row the client has already seen.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use uuid::Uuid;

use super::value::{Decimal, Scalar, SortValue};

type HmacSha256 = Hmac<Sha256>;

const DOMAIN: &[u8] = b"eventgate-cursor-v1\0";
const TAG_LEN: usize = 32;
/// Bytes of the query hash a cursor carries.
pub(crate) const QUERY_HASH_LEN: usize = 16;

/// The secret cursors are signed with. Cheap to clone; `Debug` does not show the secret.
#[derive(Clone)]
pub struct CursorKey {
    secret: Vec<u8>,
}

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey(..)")
    }
}

impl CursorKey {
    /// Any length works (HMAC hashes long keys); use at least 32 random bytes.
    pub fn new(secret: &[u8]) -> CursorKey {
        CursorKey {
            secret: secret.to_vec(),
        }
    }

    fn mac(&self, body: &[u8]) -> Option<HmacSha256> {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.secret).ok()?;
        mac.update(DOMAIN);
        mac.update(body);
        Some(mac)
    }

    /// Signs and encodes a cursor for `values` of the query with hash `query_hash`.
    pub(crate) fn encode(&self, query_hash: &[u8], values: &[SortValue]) -> String {
        let hash: String = query_hash
            .iter()
            .take(QUERY_HASH_LEN)
            .map(|b| format!("{b:02x}"))
            .collect();
        let body = json!({"q": hash, "k": values.iter().map(encode_value).collect::<Vec<_>>()});
        let mut bytes = body.to_string().into_bytes();
        let tag = self
            .mac(&bytes)
            .map(|m| m.finalize().into_bytes().to_vec())
            .unwrap_or_default();
        bytes.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Checks the signature and returns the query hash (hex) and the raw values. Errors are messages for
    /// the client.
    pub(crate) fn decode(&self, token: &str) -> Result<(String, Vec<Value>), &'static str> {
        const INVALID: &str =
            "invalid cursor: pass the `next_cursor` of the previous page unchanged";
        let bytes = URL_SAFE_NO_PAD
            .decode(token.as_bytes())
            .map_err(|_| INVALID)?;
        if bytes.len() <= TAG_LEN {
            return Err(INVALID);
        }
        let (body, tag) = bytes.split_at(bytes.len() - TAG_LEN);
        let mac = self.mac(body).ok_or(INVALID)?;
        mac.verify_slice(tag).map_err(|_| INVALID)?;
        let parsed: Value = serde_json::from_slice(body).map_err(|_| INVALID)?;
        let hash = parsed
            .get("q")
            .and_then(Value::as_str)
            .ok_or(INVALID)?
            .to_owned();
        let values = parsed
            .get("k")
            .and_then(Value::as_array)
            .ok_or(INVALID)?
            .clone();
        Ok((hash, values))
    }
}

/// Domain of [`CursorKey::sign_json`] tokens: never valid as a query cursor, nor the other way round.
const SIGNED_DOMAIN: &[u8] = b"eventgate-signed-v1\0";

impl CursorKey {
    fn purpose_mac(&self, purpose: &str, body: &[u8]) -> Option<HmacSha256> {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.secret).ok()?;
        mac.update(SIGNED_DOMAIN);
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(body);
        Some(mac)
    }

    /// Signs a JSON value as an opaque token, for cursors of listings other than queries (`purpose`
    /// names the listing, e.g. `dead-letters`; a token signed for one purpose is refused for another).
    /// Same format as query cursors: URL-safe base64 of `body ‖ HMAC-SHA256 tag`.
    pub fn sign_json(&self, purpose: &str, body: &Value) -> String {
        let mut bytes = body.to_string().into_bytes();
        let tag = self
            .purpose_mac(purpose, &bytes)
            .map(|m| m.finalize().into_bytes().to_vec())
            .unwrap_or_default();
        bytes.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Checks a [`CursorKey::sign_json`] token (in constant time) and returns its value.
    pub fn verify_json(&self, purpose: &str, token: &str) -> Result<Value, &'static str> {
        const INVALID: &str = "invalid cursor: pass the `cursor` of the previous page unchanged";
        let bytes = URL_SAFE_NO_PAD
            .decode(token.as_bytes())
            .map_err(|_| INVALID)?;
        if bytes.len() <= TAG_LEN {
            return Err(INVALID);
        }
        let (body, tag) = bytes.split_at(bytes.len() - TAG_LEN);
        let mac = self.purpose_mac(purpose, body).ok_or(INVALID)?;
        mac.verify_slice(tag).map_err(|_| INVALID)?;
        serde_json::from_slice(body).map_err(|_| INVALID)
    }
}

pub(crate) fn encode_value(value: &SortValue) -> Value {
    match value {
        None => Value::Null,
        Some(scalar) => encode_scalar(scalar),
    }
}

/// The canonical JSON of a scalar (also used for the query hash).
pub(crate) fn encode_scalar(scalar: &Scalar) -> Value {
    match scalar {
        Scalar::Uuid(u) => json!({"u": u.to_string()}),
        Scalar::Text(s) => json!({"s": s}),
        Scalar::Number(d) => json!({"n": d.to_string()}),
        Scalar::Bool(b) => json!({"b": b}),
        Scalar::Instant(t) => json!({"t": t}),
    }
}

/// Decodes one cursor value; `None` when malformed.
pub(crate) fn decode_value(value: &Value) -> Option<SortValue> {
    if value.is_null() {
        return Some(None);
    }
    let object = value.as_object()?;
    if object.len() != 1 {
        return None;
    }
    let (tag, inner) = object.iter().next()?;
    let scalar = match tag.as_str() {
        "u" => Scalar::Uuid(Uuid::parse_str(inner.as_str()?).ok()?),
        "s" => Scalar::Text(inner.as_str()?.to_owned()),
        "n" => Scalar::Number(Decimal::parse(inner.as_str()?)?),
        "b" => Scalar::Bool(inner.as_bool()?),
        "t" => Scalar::Instant(inner.as_i64()?),
        _ => return None,
    };
    Some(Some(scalar))
}

#[cfg(test)]
mod signed_json_tests {
    use super::*;

    #[test]
    fn signed_json_round_trips_and_refuses_tampering_and_other_purposes() {
        let key = CursorKey::new(b"a-test-secret-of-enough-length");
        let body = json!({"topic": "audit.logs", "k": [1736937000000000_i64, 42]});
        let token = key.sign_json("dead-letters", &body);
        assert_eq!(key.verify_json("dead-letters", &token), Ok(body));

        assert!(key.verify_json("other-listing", &token).is_err());
        assert!(CursorKey::new(b"another-secret-entirely")
            .verify_json("dead-letters", &token)
            .is_err());
        let mut bytes = URL_SAFE_NO_PAD.decode(token.as_bytes()).unwrap();
        bytes[2] ^= 1;
        assert!(key
            .verify_json("dead-letters", &URL_SAFE_NO_PAD.encode(&bytes))
            .is_err());
        assert!(key.verify_json("dead-letters", "").is_err());
        assert!(key.verify_json("dead-letters", "!!").is_err());
        // A query cursor is not a listing cursor.
        let query_cursor = key.encode(&[0; 16], &[]);
        assert!(key.verify_json("dead-letters", &query_cursor).is_err());
    }
}
