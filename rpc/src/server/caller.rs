//! Who is calling: the role of the caller's token and the subject of its
//! client certificate, as the router established them, for handlers that
//! decide on the caller (a worker may act only for its own node).
//!
//! The router runs each handler inside [`Caller::scope`]; a handler (or
//! anything it awaits on the same task) reads it with [`Caller::current`].
//! Outside a call, or in work a handler spawns onto another task, there is
//! no caller: [`Caller::current`] answers the anonymous caller, which
//! holds no role and no certificate, so a check against it fails closed.

use std::future::Future;

use crate::tls::Peer;

tokio::task_local! {
    static CALLER: Caller;
}

/// The authenticated caller of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The role of the token presented (`None`: no token, or a server
    /// whose tokens have no roles).
    pub role: Option<String>,
    /// The verified client certificate's subject, if one was presented.
    pub peer: Option<Peer>,
}

impl Caller {
    /// The caller of the request being handled; the anonymous caller
    /// outside one.
    pub fn current() -> Caller {
        CALLER.try_with(Caller::clone).unwrap_or_default()
    }

    /// Runs `f` with `self` as the current caller.
    pub async fn scope<F: Future>(self, f: F) -> F::Output {
        CALLER.scope(self, f).await
    }

    /// Whether the token's role is `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.role.as_deref() == Some(role)
    }

    /// The certificate's name if the certificate is in `group`.
    pub fn name_in(&self, group: &str) -> Option<&str> {
        self.peer
            .as_ref()
            .filter(|p| p.in_group(group))
            .map(|p| p.name.as_str())
    }

    /// How the caller shows in a refusal: `a user token`, `the
    /// certificate of w1 (mkube:workers) with a join token`.
    pub fn describe(&self) -> String {
        let token = self
            .role
            .as_deref()
            .map(|r| format!("a {r} token"))
            .unwrap_or_else(|| "no token".into());
        match &self.peer {
            Some(p) => format!(
                "the certificate of {} ({}) with {token}",
                p.name,
                p.groups.join(", ")
            ),
            None => token,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_caller_is_seen_inside_its_scope_only() {
        let caller = Caller {
            role: Some("join".into()),
            peer: Some(Peer {
                name: "w1".into(),
                groups: vec!["mkube:workers".into()],
            }),
        };
        let seen = caller.clone().scope(async { Caller::current() }).await;
        assert_eq!(seen, caller);
        assert_eq!(seen.name_in("mkube:workers"), Some("w1"));
        assert_eq!(seen.name_in("mkube:masters"), None);
        assert_eq!(Caller::current(), Caller::default());
        assert_eq!(
            seen.describe(),
            "the certificate of w1 (mkube:workers) with a join token"
        );
    }
}
