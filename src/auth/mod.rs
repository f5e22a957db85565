//! Accounts and authentication: argon2id passwords, short-lived JWT access
//! tokens with key rotation, rotating refresh-token families, roles, and rate
//! limits shared by all instances.

pub mod accounts;
pub mod admin;
pub mod client_ip;
pub mod erase;
mod extract;
pub mod jwt;
pub mod password;
pub mod refresh;
pub mod store;
pub mod validate;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::AuthConfig;
use crate::ratelimit::RateLimiter;
pub use extract::{AuthUser, ClientIp};

/// What a user may do. Checked on the server for every protected operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Member,
    Candidate,
    Moderator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Candidate => "candidate",
            Self::Moderator => "moderator",
            Self::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "member" => Ok(Self::Member),
            "candidate" => Ok(Self::Candidate),
            "moderator" => Ok(Self::Moderator),
            "admin" => Ok(Self::Admin),
            other => Err(format!(
                "unknown role {other:?} (member, candidate, moderator, admin)"
            )),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything authentication needs at request time; cheap to clone.
#[derive(Clone)]
pub struct Auth {
    pub jwt: Arc<jwt::JwtKeys>,
    pub passwords: password::Passwords,
    pub limiter: RateLimiter,
    /// Current role and active state, checked on every authenticated request.
    pub accounts: accounts::Accounts,
    pub settings: Arc<AuthConfig>,
}

impl Auth {
    pub fn new(config: &AuthConfig, limiter: RateLimiter) -> anyhow::Result<Self> {
        let active = jwt::SigningKey::new(
            config.active_key.kid.clone(),
            config.active_key.secret.expose().as_bytes().to_vec(),
        );
        let previous = config
            .previous_keys
            .iter()
            .map(|k| jwt::SigningKey::new(k.kid.clone(), k.secret.expose().as_bytes().to_vec()))
            .collect();
        let keys = jwt::JwtKeys::new(
            active,
            previous,
            config.issuer.clone(),
            config.audience.clone(),
            config.access_token_ttl,
        )?;
        if config.ephemeral_secret {
            tracing::warn!(
                "JWT_SECRET is not set: using a random secret for this process only; tokens \
                 will not survive a restart or work across instances"
            );
        }
        Ok(Self {
            jwt: Arc::new(keys),
            passwords: password::Passwords::new(
                password::Params::owasp(),
                config.password_hash_concurrency,
            )
            .with_queue_timeout(config.password_hash_queue_timeout),
            limiter,
            accounts: accounts::Accounts::new(config.account_cache_ttl),
            settings: Arc::new(config.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Role;

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in [Role::Member, Role::Candidate, Role::Moderator, Role::Admin] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().is_err());
    }
}
