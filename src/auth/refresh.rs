//! Refresh-token values. A token is `<user id, 32 hex>.<32 random bytes, base64url>`:
//! the user id lets the server find the row by its primary key (and the shard,
//! once users are sharded) without trusting it — the row is found only if the
//! SHA-256 of the whole token matches, and only that hash is stored.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The stored form of a token.
pub type TokenHash = [u8; 32];

const RANDOM_BYTES: usize = 32;
/// base64url without padding of 32 bytes.
const RANDOM_CHARS: usize = 43;

pub fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// A new token for `user_id` and its hash.
pub fn generate(user_id: Uuid) -> (String, TokenHash) {
    let mut random = [0u8; RANDOM_BYTES];
    getrandom::fill(&mut random).expect("the operating system's random number generator works");
    let token = format!("{}.{}", user_id.simple(), URL_SAFE_NO_PAD.encode(random));
    let digest = hash(&token);
    (token, digest)
}

/// The user id and hash of a well-formed token; None for anything else.
pub fn parse(token: &str) -> Option<(Uuid, TokenHash)> {
    let (user, random) = token.split_once('.')?;
    if user.len() != 32 || random.len() != RANDOM_CHARS {
        return None;
    }
    let user_id = Uuid::try_parse(user).ok()?;
    URL_SAFE_NO_PAD
        .decode(random)
        .ok()
        .filter(|b| b.len() == RANDOM_BYTES)?;
    Some((user_id, hash(token)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_parses_back_to_its_user_and_hash() {
        let user = Uuid::now_v7();
        let (token, digest) = generate(user);
        assert_eq!(parse(&token), Some((user, digest)));
    }

    #[test]
    fn tokens_are_unique_and_malformed_ones_are_rejected() {
        let user = Uuid::now_v7();
        assert_ne!(generate(user).0, generate(user).0);
        for bad in [
            "",
            "abc",
            "x.y",
            &format!("{}.short", user.simple()),
            &format!("nothex{}.{}", "0".repeat(26), "A".repeat(43)),
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
