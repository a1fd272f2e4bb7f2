//! Who may do what: the configured users (with their password hashes) and
//! the rules granting actions on repository-name patterns. Pure: the
//! decision "may this identity do these actions on this repository" and
//! nothing about HTTP, tokens or where a repository comes from.

use std::collections::BTreeMap;
use std::fmt;

use super::glob::RepositoryPattern;

/// What a client may do to a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Action {
    /// Read: manifests, blobs, tags, referrers.
    Pull,
    /// Write: uploads and manifest PUT.
    Push,
    /// Remove manifests, tags or blobs.
    Delete,
}

impl Action {
    pub(crate) const ALL: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    fn bit(self) -> u8 {
        match self {
            Action::Pull => 1,
            Action::Push => 2,
            Action::Delete => 4,
        }
    }
}

/// A set of actions.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Actions(u8);

impl Actions {
    pub(crate) const NONE: Actions = Actions(0);

    pub(crate) fn of(actions: impl IntoIterator<Item = Action>) -> Actions {
        Actions(actions.into_iter().fold(0, |acc, a| acc | a.bit()))
    }
    pub(crate) fn contains(self, a: Action) -> bool {
        self.0 & a.bit() != 0
    }
    pub(crate) fn with(self, a: Action) -> Actions {
        Actions(self.0 | a.bit())
    }
    pub(crate) fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }
    pub(crate) fn intersect(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }
    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// In the fixed order pull, push, delete.
    pub(crate) fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |a| self.contains(*a))
    }
    pub(crate) fn names(self) -> Vec<&'static str> {
        self.iter().map(Action::as_str).collect()
    }
}

impl fmt::Debug for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

/// A password hash: never shown, not even in Debug output.
#[derive(Clone)]
pub(crate) struct PasswordHash(String);

impl PasswordHash {
    /// `phc` must already be checked (`password::check`).
    pub(crate) fn new(phc: String) -> PasswordHash {
        PasswordHash(phc)
    }
    pub(crate) fn phc(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One `[[auth.user]]`.
#[derive(Clone, Debug)]
pub(crate) struct User {
    pub(crate) name: String,
    pub(crate) password_hash: PasswordHash,
    /// May use the admin API.
    pub(crate) admin: bool,
}

/// Whom a rule covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Grantee {
    /// `"*"`: any signed-in user (not anonymous clients).
    AnyUser,
    /// `"anonymous"`: clients without credentials.
    Anonymous,
    User(String),
}

impl Grantee {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Grantee::AnyUser => "*",
            Grantee::Anonymous => "anonymous",
            Grantee::User(name) => name,
        }
    }
}

/// One `[[auth.rule]]`: these grantees may do these actions on
/// repositories matching any of these patterns.
#[derive(Clone, Debug)]
pub(crate) struct Rule {
    pub(crate) grantees: Vec<Grantee>,
    pub(crate) repositories: Vec<RepositoryPattern>,
    pub(crate) actions: Actions,
}

/// Who is asking, as far as rules are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Identity<'a> {
    Anonymous,
    User(&'a str),
}

impl Rule {
    fn covers(&self, who: Identity<'_>) -> bool {
        self.grantees.iter().any(|g| match (g, who) {
            (Grantee::Anonymous, Identity::Anonymous) => true,
            (Grantee::AnyUser, Identity::User(_)) => true,
            (Grantee::User(name), Identity::User(user)) => name == user,
            _ => false,
        })
    }
}

/// Users by name, and the rules in config order.
#[derive(Clone, Debug, Default)]
pub(crate) struct Policy {
    users: BTreeMap<String, User>,
    rules: Vec<Rule>,
}

impl Policy {
    /// `users` have unique names and `rules` name only known users: config
    /// validation made sure.
    pub(crate) fn new(users: Vec<User>, rules: Vec<Rule>) -> Policy {
        Policy { users: users.into_iter().map(|u| (u.name.clone(), u)).collect(), rules }
    }

    /// True when at least one user can sign in. Without users, wharf is
    /// open as before authentication existed: anonymous pulls of public
    /// repositories, an open admin API, and nothing anyone may push.
    pub(crate) fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    pub(crate) fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    pub(crate) fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    pub(crate) fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The positions of the rules that cover `user` by name or as `"*"`.
    pub(crate) fn rules_for(&self, user: &str) -> Vec<usize> {
        (0..self.rules.len()).filter(|&i| self.rules[i].covers(Identity::User(user))).collect()
    }

    /// What the rules let `who` do on `repository` (union over every rule
    /// that covers both). A user no longer configured gets nothing.
    pub(crate) fn granted(&self, who: Identity<'_>, repository: &str) -> Actions {
        if let Identity::User(name) = who {
            if !self.users.contains_key(name) {
                return Actions::NONE;
            }
        }
        self.rules
            .iter()
            .filter(|r| r.covers(who) && r.repositories.iter().any(|p| p.matches(repository)))
            .fold(Actions::NONE, |acc, r| acc.union(r.actions))
    }

    pub(crate) fn is_admin(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.admin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, admin: bool) -> User {
        User { name: name.into(), password_hash: PasswordHash::new("$argon2id$x".into()), admin }
    }

    fn rule(grantees: &[Grantee], repos: &[&str], actions: &[Action]) -> Rule {
        Rule {
            grantees: grantees.to_vec(),
            repositories: repos.iter().map(|r| RepositoryPattern::parse(r).unwrap()).collect(),
            actions: Actions::of(actions.iter().copied()),
        }
    }

    fn policy() -> Policy {
        Policy::new(
            vec![user("alice", false), user("bob", false), user("root", true)],
            vec![
                rule(&[Grantee::User("alice".into())], &["team/*"], &[Action::Pull, Action::Push]),
                rule(&[Grantee::AnyUser], &["shared/*"], &[Action::Pull]),
                rule(&[Grantee::Anonymous], &["open/*"], &[Action::Pull]),
                rule(&[Grantee::User("alice".into())], &["team/old/*"], &[Action::Delete]),
            ],
        )
    }

    #[test]
    fn rules_union_per_user_and_pattern() {
        let p = policy();
        let alice = Identity::User("alice");
        assert_eq!(p.granted(alice, "team/app"), Actions::of([Action::Pull, Action::Push]));
        assert_eq!(p.granted(alice, "team/old/x"), Actions::of(Action::ALL));
        assert_eq!(p.granted(alice, "shared/lib"), Actions::of([Action::Pull]));
        assert_eq!(p.granted(alice, "elsewhere"), Actions::NONE);
    }

    #[test]
    fn star_means_signed_in_users_and_anonymous_only_anonymous() {
        let p = policy();
        assert_eq!(p.granted(Identity::User("bob"), "shared/lib"), Actions::of([Action::Pull]));
        assert_eq!(p.granted(Identity::Anonymous, "shared/lib"), Actions::NONE);
        assert_eq!(p.granted(Identity::Anonymous, "open/x"), Actions::of([Action::Pull]));
        assert_eq!(p.granted(Identity::User("bob"), "open/x"), Actions::NONE);
        assert_eq!(p.granted(Identity::User("bob"), "team/app"), Actions::NONE);
    }

    #[test]
    fn unknown_users_get_nothing_even_from_star_rules() {
        assert_eq!(policy().granted(Identity::User("mallory"), "shared/lib"), Actions::NONE);
    }

    #[test]
    fn admin_is_a_role_of_the_user() {
        let p = policy();
        assert!(p.is_admin("root"));
        assert!(!p.is_admin("alice"));
        assert!(!p.is_admin("nobody"));
        assert!(p.has_users());
        assert!(!Policy::default().has_users());
    }

    #[test]
    fn password_hashes_never_show_in_debug() {
        let u = User { name: "a".into(), password_hash: PasswordHash::new("$argon2id$v=19$secret".into()), admin: false };
        let shown = format!("{u:?}");
        assert!(!shown.contains("secret") && shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn action_sets_intersect_and_list_in_order() {
        let a = Actions::of([Action::Delete, Action::Pull]);
        assert_eq!(a.names(), vec!["pull", "delete"]);
        assert_eq!(a.intersect(Actions::of([Action::Pull, Action::Push])), Actions::of([Action::Pull]));
        assert!(Actions::NONE.is_empty());
        assert_eq!(Actions::NONE.with(Action::Push).names(), vec!["push"]);
    }
}
