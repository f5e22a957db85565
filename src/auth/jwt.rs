//! Short-lived JWT access tokens, HS256 only, with key ids for rotation.
//!
//! Every token names the key that signed it in its `kid` header. Verification
//! looks the key up among the active key and the previous ones still accepted,
//! so a new signing key can be rolled out without logging everyone out: tokens
//! signed by the old key keep working until they expire, and the old key is
//! removed from the configuration one access-token lifetime later.
//!
//! The algorithm is pinned to HS256 before any key is touched. The header's
//! `alg` is attacker-controlled, and trusting it is the classic JWT mistake
//! (`alg: none`, or an HMAC signature made with a public key), so anything but
//! HS256 is refused outright. Header fields that point at other keys (`jku`,
//! `jwk`, `x5u`, `x5c`) are ignored: keys only ever come from our own table.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The only signing algorithm issued or accepted.
const ALGORITHM: Algorithm = Algorithm::HS256;

/// HS256 keys shorter than the hash output (32 bytes) weaken the MAC and are
/// usually a sign of a placeholder secret left in the configuration.
pub const MIN_SECRET_LEN: usize = 32;

/// Clock skew tolerated on `exp` and `iat`. Instances share NTP-synced clocks,
/// so a few seconds covers real skew without stretching a token's lifetime.
pub const MAX_LEEWAY: Duration = Duration::from_secs(5);

/// Access tokens are meant to be short-lived (revocation happens by letting
/// them expire), so a lifetime above a day is treated as a configuration error.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// An HMAC secret and the id that names it in token headers.
pub struct SigningKey {
    /// Public identifier written in the `kid` header; not secret.
    pub kid: String,
    secret: Vec<u8>,
}

impl SigningKey {
    /// Pairs a key id with its secret. Length rules are checked by
    /// [`JwtKeys::new`], which reports every key's problem with its kid.
    pub fn new(kid: impl Into<String>, secret: impl Into<Vec<u8>>) -> Self {
        Self {
            kid: kid.into(),
            secret: secret.into(),
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Drop for SigningKey {
    /// Best-effort wipe of our copy of the secret (`zeroize` is not a direct
    /// dependency): `black_box` discourages the compiler from dropping the
    /// writes, but nothing guarantees it. jsonwebtoken zeroizes its own copies.
    fn drop(&mut self) {
        self.secret.fill(0);
        std::hint::black_box(&self.secret);
    }
}

/// Why a key configuration was refused. Reported at start-up, so each variant
/// names what to fix; none of them contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyConfigError {
    #[error("JWT key id must not be empty")]
    EmptyKid,
    #[error(
        "JWT key {kid:?} has a {len}-byte secret; at least {MIN_SECRET_LEN} bytes are required"
    )]
    SecretTooShort { kid: String, len: usize },
    #[error("JWT key id {0:?} is used by more than one key")]
    DuplicateKid(String),
    #[error("JWT issuer and audience must not be empty")]
    EmptyIssuerOrAudience,
    #[error("access token lifetime must be between 1 second and {MAX_TTL:?}, got {0:?}")]
    TtlOutOfRange(Duration),
    #[error("clock leeway must be at most {MAX_LEEWAY:?}, got {0:?}")]
    LeewayTooLarge(Duration),
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id (serialized as a hyphenated UUID string).
    pub sub: Uuid,
    /// One of `member`, `candidate`, `moderator`, `admin`; checked by handlers.
    pub role: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Issue time, Unix seconds.
    pub iat: i64,
    pub iss: String,
    pub aud: String,
    /// Unique token id, for logs and for a deny-list should one ever be needed.
    pub jti: Uuid,
}

/// A freshly signed access token and what the login response tells the client.
#[derive(Clone)]
pub struct IssuedToken {
    pub token: String,
    /// Lifetime in seconds, as OAuth's `expires_in`.
    pub expires_in: u64,
    pub jti: Uuid,
    /// Expiry, Unix seconds (same value as the `exp` claim).
    pub expires_at: i64,
}

impl fmt::Debug for IssuedToken {
    /// The token is a bearer credential, so it never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("jti", &self.jti)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Signing failed. With a valid HMAC key this does not happen in practice, but
/// jsonwebtoken's API is fallible and a panic in a login handler is worse.
#[derive(Debug, thiserror::Error)]
#[error("could not sign access token: {0}")]
pub struct IssueError(#[source] jsonwebtoken::errors::Error);

/// Why a token was refused. Callers answer 401 for every variant alike; the
/// reason is only for logs and metrics, and never contains the token itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Well formed and correctly signed, but past `exp` (plus leeway): the
    /// client should refresh.
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(InvalidReason),
}

/// The detail behind [`TokenError::Invalid`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidReason {
    /// Not three base64url parts, bad JSON, an unknown `alg` such as `none`,
    /// or claims of the wrong shape.
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("algorithm is not HS256")]
    Algorithm,
    #[error("header has critical extensions we do not implement")]
    CriticalHeader,
    #[error("header has no kid")]
    MissingKid,
    #[error("kid is not among the accepted keys")]
    UnknownKid,
    #[error("signature does not match")]
    Signature,
    #[error("wrong issuer")]
    Issuer,
    #[error("wrong audience")]
    Audience,
    #[error("claim {0} is missing or malformed")]
    Claim(String),
    #[error("not valid yet (nbf)")]
    NotYetValid,
    #[error("issued in the future (iat)")]
    IssuedInFuture,
    #[error("{0}")]
    Other(String),
}

impl From<InvalidReason> for TokenError {
    fn from(reason: InvalidReason) -> Self {
        Self::Invalid(reason)
    }
}

impl TokenError {
    /// Kept private (rather than a `From` impl) so jsonwebtoken's error type
    /// stays out of this module's public API.
    fn from_jwt(err: &jsonwebtoken::errors::Error) -> Self {
        let reason = match err.kind() {
            ErrorKind::ExpiredSignature => return Self::Expired,
            ErrorKind::InvalidSignature => InvalidReason::Signature,
            ErrorKind::InvalidAlgorithm
            | ErrorKind::MissingAlgorithm
            | ErrorKind::UnsupportedAlgorithm
            | ErrorKind::InvalidAlgorithmName => InvalidReason::Algorithm,
            ErrorKind::InvalidIssuer => InvalidReason::Issuer,
            ErrorKind::InvalidAudience => InvalidReason::Audience,
            ErrorKind::ImmatureSignature => InvalidReason::NotYetValid,
            ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim) => {
                InvalidReason::Claim(claim.clone())
            }
            ErrorKind::InvalidToken
            | ErrorKind::Base64(_)
            | ErrorKind::Json(_)
            | ErrorKind::Utf8(_) => InvalidReason::Malformed(err.to_string()),
            _ => InvalidReason::Other(err.to_string()),
        };
        Self::Invalid(reason)
    }
}

/// The keys and rules for issuing and verifying access tokens.
///
/// Built once at start-up; share it behind an `Arc`.
pub struct JwtKeys {
    active_kid: String,
    encoding: EncodingKey,
    /// Active and previous keys by kid. A handful of entries at most.
    decoding: HashMap<String, DecodingKey>,
    issuer: String,
    audience: String,
    ttl: Duration,
    leeway: Duration,
    validation: Validation,
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&str> = self.decoding.keys().map(String::as_str).collect();
        kids.sort_unstable();
        f.debug_struct("JwtKeys")
            .field("active_kid", &self.active_kid)
            .field("accepted_kids", &kids)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl", &self.ttl)
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

impl JwtKeys {
    /// Signs with `active`; verifies with `active` and every key in `previous`.
    ///
    /// Refuses empty or duplicate kids, secrets shorter than
    /// [`MIN_SECRET_LEN`], an empty issuer or audience, and a lifetime outside
    /// 1 s ..= [`MAX_TTL`]. The clock leeway starts at [`MAX_LEEWAY`]; see
    /// [`JwtKeys::with_leeway`].
    pub fn new(
        active: SigningKey,
        previous: Vec<SigningKey>,
        issuer: String,
        audience: String,
        ttl: Duration,
    ) -> Result<Self, KeyConfigError> {
        if issuer.is_empty() || audience.is_empty() {
            return Err(KeyConfigError::EmptyIssuerOrAudience);
        }
        if ttl < Duration::from_secs(1) || ttl > MAX_TTL {
            return Err(KeyConfigError::TtlOutOfRange(ttl));
        }

        let mut decoding = HashMap::with_capacity(1 + previous.len());
        for key in std::iter::once(&active).chain(&previous) {
            if key.kid.is_empty() {
                return Err(KeyConfigError::EmptyKid);
            }
            if key.secret.len() < MIN_SECRET_LEN {
                return Err(KeyConfigError::SecretTooShort {
                    kid: key.kid.clone(),
                    len: key.secret.len(),
                });
            }
            if decoding
                .insert(key.kid.clone(), DecodingKey::from_secret(&key.secret))
                .is_some()
            {
                return Err(KeyConfigError::DuplicateKid(key.kid.clone()));
            }
        }

        Ok(Self {
            active_kid: active.kid.clone(),
            encoding: EncodingKey::from_secret(&active.secret),
            decoding,
            validation: validation(&issuer, &audience, MAX_LEEWAY),
            issuer,
            audience,
            ttl,
            leeway: MAX_LEEWAY,
        })
    }

    /// Sets the clock leeway applied to `exp` and `iat` (at most
    /// [`MAX_LEEWAY`]); tests use zero to check expiry to the second.
    pub fn with_leeway(mut self, leeway: Duration) -> Result<Self, KeyConfigError> {
        if leeway > MAX_LEEWAY {
            return Err(KeyConfigError::LeewayTooLarge(leeway));
        }
        self.leeway = leeway;
        self.validation = validation(&self.issuer, &self.audience, leeway);
        Ok(self)
    }

    /// The kid new tokens are signed with.
    pub fn active_kid(&self) -> &str {
        &self.active_kid
    }

    /// The access-token lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Signs an access token for `user_id` with the active key.
    pub fn issue(&self, user_id: Uuid, role: &str) -> Result<IssuedToken, IssueError> {
        let now = unix_now();
        let expires_in = self.ttl.as_secs();
        // `ttl` is capped at MAX_TTL in `new`, so this cannot overflow.
        let expires_at = now + i64::try_from(expires_in).expect("ttl is capped at MAX_TTL");
        let claims = Claims {
            sub: user_id,
            role: role.to_owned(),
            exp: expires_at,
            iat: now,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            jti: Uuid::new_v4(),
        };

        // `Header::new` sets `typ: JWT`.
        let mut header = Header::new(ALGORITHM);
        header.kid = Some(self.active_kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(IssueError)?;

        Ok(IssuedToken {
            token,
            expires_in,
            jti: claims.jti,
            expires_at,
        })
    }

    /// Checks a token's structure, algorithm, key, signature and claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        // The header is read unauthenticated; it is only used to pick a key
        // from our own table, and the algorithm is checked, not obeyed.
        let header = jsonwebtoken::decode_header(token).map_err(|e| TokenError::from_jwt(&e))?;
        if header.alg != ALGORITHM {
            return Err(InvalidReason::Algorithm.into());
        }
        // RFC 7515 §4.1.11: a recipient must reject critical extensions it
        // does not understand, and we understand none.
        if header.crit.is_some() {
            return Err(InvalidReason::CriticalHeader.into());
        }
        let kid = header.kid.as_deref().ok_or(InvalidReason::MissingKid)?;
        let key = self.decoding.get(kid).ok_or(InvalidReason::UnknownKid)?;

        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|e| TokenError::from_jwt(&e))?
            .claims;

        // A token "issued" beyond our clock skew was made by a broken or
        // malicious clock; refusing it keeps lifetimes honest.
        let leeway = i64::try_from(self.leeway.as_secs()).expect("leeway is capped at 5 s");
        if claims.iat > unix_now() + leeway {
            return Err(InvalidReason::IssuedInFuture.into());
        }
        Ok(claims)
    }
}

/// The rules jsonwebtoken applies after the signature checks out.
fn validation(issuer: &str, audience: &str, leeway: Duration) -> Validation {
    // `Validation::new` pins the accepted algorithms to exactly this one.
    let mut validation = Validation::new(ALGORITHM);
    validation.leeway = leeway.as_secs();
    validation.validate_exp = true;
    // We never issue `nbf`, but if a token carries one it must hold.
    validation.validate_nbf = true;
    validation.validate_aud = true;
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    // Without this, jsonwebtoken checks iss and aud only when they are
    // present. `iat` is not one of its "spec claims"; `verify` checks it.
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::{Value, json};

    use super::*;

    const ISSUER: &str = "https://refbackend.test";
    const AUDIENCE: &str = "refbackend-api";
    const TTL: Duration = Duration::from_secs(900);

    fn secret(byte: u8) -> Vec<u8> {
        vec![byte; MIN_SECRET_LEN]
    }

    fn keys_with(active: (&str, u8), previous: &[(&str, u8)]) -> JwtKeys {
        JwtKeys::new(
            SigningKey::new(active.0, secret(active.1)),
            previous
                .iter()
                .map(|(kid, byte)| SigningKey::new(*kid, secret(*byte)))
                .collect(),
            ISSUER.to_owned(),
            AUDIENCE.to_owned(),
            TTL,
        )
        .expect("valid key configuration")
    }

    /// Active key "k2" (secret of 2s), previous key "k1" (secret of 1s).
    fn keys() -> JwtKeys {
        keys_with(("k2", 2), &[("k1", 1)])
    }

    fn valid_claims() -> Value {
        let now = unix_now();
        json!({
            "sub": Uuid::new_v4().to_string(),
            "role": "member",
            "exp": now + 600,
            "iat": now,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "jti": Uuid::new_v4().to_string(),
        })
    }

    fn with(mut claims: Value, field: &str, value: Value) -> Value {
        claims[field] = value;
        claims
    }

    fn without(mut claims: Value, field: &str) -> Value {
        claims
            .as_object_mut()
            .expect("claims are an object")
            .remove(field);
        claims
    }

    /// Signs arbitrary claims through jsonwebtoken, as a forger holding (or
    /// guessing) a key would.
    fn sign(alg: Algorithm, kid: Option<&str>, secret: &[u8], claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).expect("encode")
    }

    fn b64(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("json"))
    }

    fn invalid(reason: InvalidReason) -> Result<Claims, TokenError> {
        Err(TokenError::Invalid(reason))
    }

    #[test]
    fn an_issued_token_verifies_and_carries_its_claims() {
        let keys = keys();
        let user = Uuid::new_v4();
        let issued = keys.issue(user, "moderator").expect("issue");

        let claims = keys.verify(&issued.token).expect("verify");
        assert_eq!(claims.sub, user);
        assert_eq!(claims.role, "moderator");
        assert_eq!(claims.iss, ISSUER);
        assert_eq!(claims.aud, AUDIENCE);
        assert_eq!(claims.jti, issued.jti);
        assert_eq!(claims.exp, issued.expires_at);
        assert_eq!(claims.exp - claims.iat, 900);
        assert_eq!(issued.expires_in, 900);
        assert_eq!(claims.jti.get_version_num(), 4);

        let header = jsonwebtoken::decode_header(&issued.token).expect("header");
        assert_eq!(header.alg, Algorithm::HS256);
        assert_eq!(header.kid.as_deref(), Some("k2"));
        assert_eq!(header.typ.as_deref(), Some("JWT"));

        // `sub` travels as a string, not as a byte array.
        let payload = issued.token.split('.').nth(1).expect("payload");
        let payload: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json");
        assert_eq!(payload["sub"], json!(user.to_string()));
    }

    #[test]
    fn every_token_gets_a_fresh_jti() {
        let keys = keys();
        let user = Uuid::new_v4();
        let first = keys.issue(user, "member").expect("issue");
        let second = keys.issue(user, "member").expect("issue");
        assert_ne!(first.jti, second.jti);
    }

    #[test]
    fn an_alg_none_token_is_rejected() {
        let keys = keys();
        for alg in ["none", "None", "NONE"] {
            let header = json!({ "alg": alg, "typ": "JWT", "kid": "k2" });
            let unsigned = format!("{}.{}.", b64(&header), b64(&valid_claims()));
            let result = keys.verify(&unsigned);
            assert!(
                matches!(
                    result,
                    Err(TokenError::Invalid(InvalidReason::Malformed(_)))
                ),
                "alg {alg}: {result:?}"
            );
        }
    }

    #[test]
    fn other_hmac_algorithms_are_rejected_even_with_a_valid_signature() {
        let keys = keys();
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let token = sign(alg, Some("k2"), &secret(2), &valid_claims());
            assert_eq!(
                keys.verify(&token),
                invalid(InvalidReason::Algorithm),
                "{alg:?}"
            );
        }
    }

    #[test]
    fn asymmetric_algorithms_are_rejected() {
        let keys = keys();
        // A genuine HS256 token whose header is swapped for an RS256 or ES256
        // one: the classic key-confusion attempt. It must fail on the
        // algorithm, before any key is used.
        let genuine = keys.issue(Uuid::new_v4(), "member").expect("issue");
        let (_, rest) = genuine.token.split_once('.').expect("three parts");
        for alg in ["RS256", "PS256", "ES256", "EdDSA"] {
            let header = json!({ "alg": alg, "typ": "JWT", "kid": "k2" });
            let token = format!("{}.{rest}", b64(&header));
            assert_eq!(
                keys.verify(&token),
                invalid(InvalidReason::Algorithm),
                "{alg}"
            );
        }
    }

    #[test]
    fn a_wrong_audience_is_rejected() {
        let keys = keys();
        let claims = with(valid_claims(), "aud", json!("another-api"));
        let token = sign(Algorithm::HS256, Some("k2"), &secret(2), &claims);
        assert_eq!(keys.verify(&token), invalid(InvalidReason::Audience));
    }

    #[test]
    fn a_wrong_issuer_is_rejected() {
        let keys = keys();
        let claims = with(valid_claims(), "iss", json!("https://evil.test"));
        let token = sign(Algorithm::HS256, Some("k2"), &secret(2), &claims);
        assert_eq!(keys.verify(&token), invalid(InvalidReason::Issuer));
    }

    #[test]
    fn a_token_missing_a_required_claim_is_rejected() {
        let keys = keys();
        for claim in ["exp", "iat", "iss", "aud", "sub", "role", "jti"] {
            let claims = without(valid_claims(), claim);
            let token = sign(Algorithm::HS256, Some("k2"), &secret(2), &claims);
            let result = keys.verify(&token);
            assert!(
                matches!(result, Err(TokenError::Invalid(_))),
                "{claim}: {result:?}"
            );
        }
    }

    #[test]
    fn an_expired_token_is_rejected() {
        let keys = keys();
        let now = unix_now();
        let claims = with(valid_claims(), "iat", json!(now - 1000));
        let claims = with(claims, "exp", json!(now - 60));
        let token = sign(Algorithm::HS256, Some("k2"), &secret(2), &claims);
        assert_eq!(keys.verify(&token), Err(TokenError::Expired));
    }

    #[test]
    fn expiry_allows_the_configured_leeway_and_no_more() {
        // Expired two seconds ago: inside the default 5 s leeway (unless this
        // test stalls for three seconds), outside a zero leeway.
        let claims = with(valid_claims(), "exp", json!(unix_now() - 2));
        let token = sign(Algorithm::HS256, Some("k2"), &secret(2), &claims);
        assert!(keys().verify(&token).is_ok());
        let strict = keys().with_leeway(Duration::ZERO).expect("valid leeway");
        assert_eq!(strict.verify(&token), Err(TokenError::Expired));
    }

    #[test]
    fn a_leeway_above_five_seconds_is_refused() {
        assert_eq!(
            keys().with_leeway(Duration::from_secs(6)).map(|_| ()),
            Err(KeyConfigError::LeewayTooLarge(Duration::from_secs(6)))
        );
    }

    #[test]
    fn a_token_issued_in_the_future_is_rejected() {
        let keys = keys();
        let now = unix_now();
        let claims = with(valid_claims(), "iat", json!(now + 3600));
        let claims = with(claims, "exp", json!(now + 7200));
        let token = sign(Algorithm::HS256, Some("k2"), &secret(2), &claims);
        assert_eq!(keys.verify(&token), invalid(InvalidReason::IssuedInFuture));
    }

    #[test]
    fn a_token_not_valid_yet_is_rejected() {
        let keys = keys();
        let claims = with(valid_claims(), "nbf", json!(unix_now() + 3600));
        let token = sign(Algorithm::HS256, Some("k2"), &secret(2), &claims);
        assert_eq!(keys.verify(&token), invalid(InvalidReason::NotYetValid));
    }

    #[test]
    fn a_tampered_payload_is_rejected() {
        let keys = keys();
        let issued = keys.issue(Uuid::new_v4(), "member").expect("issue");
        let parts: Vec<&str> = issued.token.split('.').collect();
        let mut claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
        claims["role"] = json!("admin");
        let forged = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
        assert_eq!(keys.verify(&forged), invalid(InvalidReason::Signature));
    }

    #[test]
    fn a_tampered_signature_is_rejected() {
        let keys = keys();
        let issued = keys.issue(Uuid::new_v4(), "member").expect("issue");
        let (message, signature) = issued.token.rsplit_once('.').expect("three parts");
        let mut signature = URL_SAFE_NO_PAD.decode(signature).expect("b64");
        signature[0] ^= 0x01;
        let forged = format!("{message}.{}", URL_SAFE_NO_PAD.encode(&signature));
        assert_eq!(keys.verify(&forged), invalid(InvalidReason::Signature));

        let stripped = format!("{message}.");
        assert_eq!(keys.verify(&stripped), invalid(InvalidReason::Signature));
    }

    #[test]
    fn a_token_signed_with_another_secret_under_a_known_kid_is_rejected() {
        let token = sign(Algorithm::HS256, Some("k2"), &secret(9), &valid_claims());
        assert_eq!(keys().verify(&token), invalid(InvalidReason::Signature));
    }

    #[test]
    fn a_token_without_kid_is_rejected() {
        let token = sign(Algorithm::HS256, None, &secret(2), &valid_claims());
        assert_eq!(keys().verify(&token), invalid(InvalidReason::MissingKid));
    }

    #[test]
    fn a_token_with_an_unknown_kid_is_rejected() {
        let token = sign(Algorithm::HS256, Some("k9"), &secret(2), &valid_claims());
        assert_eq!(keys().verify(&token), invalid(InvalidReason::UnknownKid));
    }

    #[test]
    fn a_token_with_critical_header_extensions_is_rejected() {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k2".to_owned());
        header.crit = Some(vec!["exp".to_owned()]);
        let token = jsonwebtoken::encode(
            &header,
            &valid_claims(),
            &EncodingKey::from_secret(&secret(2)),
        )
        .expect("encode");
        assert_eq!(
            keys().verify(&token),
            invalid(InvalidReason::CriticalHeader)
        );
    }

    #[test]
    fn garbage_is_rejected_as_malformed() {
        let keys = keys();
        for token in ["", "abc", "a.b", "a.b.c", "a.b.c.d", "...", "Bearer x.y.z"] {
            let result = keys.verify(token);
            assert!(
                matches!(
                    result,
                    Err(TokenError::Invalid(InvalidReason::Malformed(_)))
                ),
                "{token:?}: {result:?}"
            );
        }
    }

    #[test]
    fn a_token_signed_by_the_previous_key_verifies_after_rotation() {
        let before = keys_with(("k1", 1), &[]);
        let token = before.issue(Uuid::new_v4(), "member").expect("issue").token;

        let after = keys_with(("k2", 2), &[("k1", 1)]);
        assert!(after.verify(&token).is_ok());
        let fresh = after.issue(Uuid::new_v4(), "member").expect("issue").token;
        assert_eq!(
            jsonwebtoken::decode_header(&fresh)
                .expect("header")
                .kid
                .as_deref(),
            Some("k2")
        );
        // The old configuration does not know the new key.
        assert_eq!(before.verify(&fresh), invalid(InvalidReason::UnknownKid));
    }

    #[test]
    fn a_token_whose_kid_was_removed_is_rejected() {
        let old = keys_with(("k1", 1), &[]);
        let token = old.issue(Uuid::new_v4(), "member").expect("issue").token;

        let rotated_twice = keys_with(("k3", 3), &[("k2", 2)]);
        assert_eq!(
            rotated_twice.verify(&token),
            invalid(InvalidReason::UnknownKid)
        );
    }

    fn build(active: SigningKey, previous: Vec<SigningKey>) -> Result<JwtKeys, KeyConfigError> {
        JwtKeys::new(active, previous, ISSUER.into(), AUDIENCE.into(), TTL)
    }

    #[test]
    fn duplicate_kids_are_refused() {
        let result = build(
            SigningKey::new("k1", secret(1)),
            vec![SigningKey::new("k1", secret(2))],
        );
        assert_eq!(
            result.map(|_| ()),
            Err(KeyConfigError::DuplicateKid("k1".into()))
        );

        let result = build(
            SigningKey::new("k3", secret(3)),
            vec![
                SigningKey::new("k1", secret(1)),
                SigningKey::new("k1", secret(2)),
            ],
        );
        assert_eq!(
            result.map(|_| ()),
            Err(KeyConfigError::DuplicateKid("k1".into()))
        );
    }

    #[test]
    fn secrets_shorter_than_32_bytes_are_refused() {
        let short = vec![7; MIN_SECRET_LEN - 1];
        let result = build(SigningKey::new("k1", short.clone()), vec![]);
        assert_eq!(
            result.map(|_| ()),
            Err(KeyConfigError::SecretTooShort {
                kid: "k1".into(),
                len: 31
            })
        );

        let result = build(
            SigningKey::new("k2", secret(2)),
            vec![SigningKey::new("k1", short)],
        );
        assert!(matches!(
            result,
            Err(KeyConfigError::SecretTooShort { kid, .. }) if kid == "k1"
        ));
    }

    #[test]
    fn empty_kids_issuers_audiences_and_bad_lifetimes_are_refused() {
        assert_eq!(
            build(SigningKey::new("", secret(1)), vec![]).map(|_| ()),
            Err(KeyConfigError::EmptyKid)
        );
        let key = || SigningKey::new("k1", secret(1));
        assert_eq!(
            JwtKeys::new(key(), vec![], String::new(), AUDIENCE.into(), TTL).map(|_| ()),
            Err(KeyConfigError::EmptyIssuerOrAudience)
        );
        for ttl in [Duration::ZERO, Duration::from_millis(999), MAX_TTL * 2] {
            assert_eq!(
                JwtKeys::new(key(), vec![], ISSUER.into(), AUDIENCE.into(), ttl).map(|_| ()),
                Err(KeyConfigError::TtlOutOfRange(ttl))
            );
        }
    }

    #[test]
    fn debug_output_never_shows_secrets_or_tokens() {
        let key = SigningKey::new("k1", b"super-secret-value-of-32-bytes!!".to_vec());
        assert!(!format!("{key:?}").contains("super-secret"));

        let keys = keys();
        let debug = format!("{keys:?}");
        assert!(debug.contains("k1") && debug.contains("k2"), "{debug}");
        assert!(!debug.contains("[2, 2"), "{debug}");

        let issued = keys.issue(Uuid::new_v4(), "member").expect("issue");
        assert!(!format!("{issued:?}").contains(&issued.token));
    }
}
