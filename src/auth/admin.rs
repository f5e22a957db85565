//! The `refbackend admin` command: bootstrap the first administrator.

use std::io::BufRead;

use anyhow::{Context, bail};
use sqlx::PgPool;
use uuid::Uuid;

use super::password::{Params, Passwords};
use super::store::{self, NewUser};
use super::{Role, validate};

/// What `create_or_promote` did.
pub enum Outcome {
    /// An existing account became an admin: running instances must drop its
    /// cached role.
    Promoted {
        id: Uuid,
        message: String,
    },
    Created {
        message: String,
    },
}

impl Outcome {
    pub fn message(&self) -> &str {
        match self {
            Self::Promoted { message, .. } | Self::Created { message } => message,
        }
    }
}

/// Promotes the account with `email` to admin, or creates it as an admin.
pub async fn create_or_promote(
    pool: &PgPool,
    email: &str,
    display_name: &str,
) -> anyhow::Result<Outcome> {
    let email = validate::email(email).map_err(|e| anyhow::anyhow!("email {}", e.message))?;
    if let Some(user) = store::find_by_email(pool, &email).await? {
        store::set_role(pool, None, user.id, Role::Admin).await?;
        return Ok(Outcome::Promoted {
            id: user.id,
            message: format!("promoted {email} to admin"),
        });
    }
    let password = match std::env::var("ADMIN_PASSWORD") {
        Ok(p) if !p.is_empty() => p,
        _ => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if let Err(e) = validate::password(&password) {
        bail!("password {}", e.message);
    }
    let display_name = validate::display_name(display_name)
        .map_err(|e| anyhow::anyhow!("display name {}", e.message))?;
    let hash = Passwords::new(Params::owasp(), 1)
        .hash(&password)
        .await
        .context("hashing the password")?;
    let mut tx = pool.begin().await?;
    store::insert_user(
        &mut tx,
        &NewUser {
            id: Uuid::now_v7(),
            email: &email,
            password_hash: &hash,
            display_name: &display_name,
            role: Role::Admin,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    tx.commit().await?;
    Ok(Outcome::Created {
        message: format!("created admin {email}"),
    })
}
