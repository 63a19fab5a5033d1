//! Turning etcd authentication on for one pgha cluster, idempotently.
//!
//! The result, on an etcd with or without authentication before:
//! - user `root` with role `root` (etcd's superuser; etcd requires it
//!   before authentication can be enabled), with the given root password;
//! - a role named after the cluster's etcd user granting readwrite on the
//!   cluster's key prefix (`<namespace>/<cluster>/`, the trailing slash
//!   included, so cluster `a` cannot reach cluster `ab`) and nothing else;
//! - that user, with the given password and that role;
//! - authentication enabled: anonymous requests and wrong passwords refused.
//!
//! Run again, it converges: existing users get the given password (so the
//! files in `secrets/` stay the truth), existing grants are kept. While
//! authentication is off the setup runs anonymously; once it is on, it logs
//! in as root.
//!
//! Hazard: etcd checks passwords with bcrypt, so every login costs the
//! server some milliseconds of CPU; clients log in once per connection.

use crate::error::{DcsError, DcsResult};
use etcd_client::{Client, ConnectOptions, Permission};
use std::time::Duration;

/// etcd's superuser; its role of the same name may do everything.
pub const ROOT_USER: &str = "root";

/// What [`enable`] sets up.
pub struct AuthPlan<'a> {
    pub endpoints: &'a [String],
    /// Bound on each request (connecting included).
    pub timeout: Duration,
    pub root_password: &'a str,
    /// The cluster's etcd user (also the name of its role).
    pub user: &'a str,
    pub password: &'a str,
    /// The cluster's key prefix, ending in `/`.
    pub prefix: &'a str,
}

impl std::fmt::Debug for AuthPlan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthPlan")
            .field("endpoints", &self.endpoints)
            .field("user", &self.user)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// What [`enable`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Authentication was off; it is on now.
    Enabled,
    /// Authentication was already on; users and role were brought up to date.
    AlreadyEnabled,
}

/// Set up the users and role of `plan` and enable authentication.
pub async fn enable(plan: &AuthPlan<'_>) -> DcsResult<AuthOutcome> {
    if plan.user == ROOT_USER {
        return Err(DcsError::Denied(
            "dcs.username must not be \"root\": the cluster's etcd user is limited to its key prefix"
                .into(),
        ));
    }
    if !plan.prefix.ends_with('/') || plan.prefix.len() < 2 {
        return Err(DcsError::other(
            "etcd auth setup",
            format!("key prefix {:?} must end with '/'", plan.prefix),
        ));
    }
    let mut anonymous = connect(plan, None).await?;
    // Administrative requests are open to anyone while authentication is
    // off, and refused without a login once it is on.
    let was_on = match timed(plan, "user_list", anonymous.user_list()).await {
        Ok(_) => false,
        Err(e) if e.is_denied() => true,
        Err(e) => return Err(e),
    };
    let mut client = if was_on {
        connect(plan, Some((ROOT_USER, plan.root_password)))
            .await
            .map_err(|e| match e {
                DcsError::Denied(_) => DcsError::Denied(format!(
                    "etcd at {} has authentication on and refused root's password \
                     (the etcd-root.password file in the secrets directory): {e}",
                    plan.endpoints.join(",")
                )),
                other => other,
            })?
    } else {
        anonymous
    };
    if !was_on {
        // Once on, root logged in with this very password: changing it
        // (even to itself) would end root's session.
        ensure_user(plan, &mut client, ROOT_USER, plan.root_password).await?;
        ignore_exists(
            timed(
                plan,
                "user_grant_role",
                client.user_grant_role(ROOT_USER, ROOT_USER),
            )
            .await,
        )?;
    }
    ignore_exists(timed(plan, "role_add", client.role_add(plan.user)).await)?;
    let perm = Permission::read_write(plan.prefix).with_prefix();
    timed(
        plan,
        "role_grant_permission",
        client.role_grant_permission(plan.user, perm),
    )
    .await?;
    // A password change ends the user's sessions (the agents log in again),
    // so it is only made when the password differs.
    let current = was_on
        && connect(plan, Some((plan.user, plan.password)))
            .await
            .is_ok();
    if !current {
        ensure_user(plan, &mut client, plan.user, plan.password).await?;
    }
    ignore_exists(
        timed(
            plan,
            "user_grant_role",
            client.user_grant_role(plan.user, plan.user),
        )
        .await,
    )?;
    if was_on {
        return Ok(AuthOutcome::AlreadyEnabled);
    }
    timed(plan, "auth_enable", client.auth_enable()).await?;
    Ok(AuthOutcome::Enabled)
}

/// Create `user` with `password`, or set the password of an existing one.
async fn ensure_user(
    plan: &AuthPlan<'_>,
    client: &mut Client,
    user: &str,
    password: &str,
) -> DcsResult<()> {
    let added = timed(plan, "user_add", client.user_add(user, password, None)).await;
    if added_or_exists(added)? {
        return Ok(());
    }
    timed(
        plan,
        "user_change_password",
        client.user_change_password(user, password),
    )
    .await
    .map(|_| ())
}

/// Ok(true) when added, Ok(false) when it existed already.
fn added_or_exists<T>(r: DcsResult<T>) -> DcsResult<bool> {
    match r {
        Ok(_) => Ok(true),
        Err(e) if already_exists(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

fn ignore_exists<T>(r: DcsResult<T>) -> DcsResult<()> {
    added_or_exists(r).map(|_| ())
}

fn already_exists(e: &DcsError) -> bool {
    format!("{e:#} {:?}", e).contains("already exists")
}

async fn connect(plan: &AuthPlan<'_>, login: Option<(&str, &str)>) -> DcsResult<Client> {
    let mut opts = ConnectOptions::new().with_connect_timeout(plan.timeout);
    if let Some((user, password)) = login {
        opts = opts.with_user(user, password);
    }
    timed(
        plan,
        "connect",
        Client::connect(plan.endpoints.to_vec(), Some(opts)),
    )
    .await
}

/// `fut` under the plan's timeout, its error classified.
async fn timed<T>(
    plan: &AuthPlan<'_>,
    op: &'static str,
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> DcsResult<T> {
    match tokio::time::timeout(plan.timeout, fut).await {
        Ok(r) => r.map_err(|e| super::convert::classify(op, e, None)),
        Err(elapsed) => Err(DcsError::unavailable(op, elapsed)),
    }
}
