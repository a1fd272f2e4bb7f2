//! Authentication and authorization: who a client is, and whether it may
//! do what it asks.
//!
//! - `policy.rs`: users, rules and the actions they grant (pure).
//! - `glob.rs`: the repository-name patterns of rules (pure).
//! - `password.rs`: argon2id hashing and verification.
//! - `keys.rs`: the token signing keys, their file and their rotation.
//! - `token.rs`: signing and checking JWTs.
//!
//! Here: the [`Auth`] service the registry and admin ports call. It
//! authenticates a request (anonymous, Basic, or a bearer token), decides
//! whether a principal may do an action on a repository whose visibility
//! the caller states, builds the `WWW-Authenticate` challenge, and issues
//! tokens at `GET /token`. It never knows routes, distributions or
//! upstreams: callers map a request to (repository, action, visibility).
//! Passwords, hashes, tokens and keys are never logged.

mod glob;
pub(crate) mod keys;
mod password;
mod policy;
pub(crate) mod token;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest as _, Sha256};

use crate::config::AuthConfig;
use crate::metadata::Store;
use crate::oci::RepositoryName;
pub(crate) use glob::RepositoryPattern;
pub(crate) use keys::KeyInfo;
pub(crate) use password::{check as check_password_hash, hash as hash_password};
use policy::{Identity, Policy};
pub(crate) use policy::{Action, Actions, Grantee, PasswordHash, Rule, User};
use token::{Access, Audience, Claims, TokenError};

/// Where the auth state lives under `storage.path`.
pub(crate) const AUTH_DIR: &str = "auth";
/// A verified password is remembered this long, so `auth.basic` clients
/// do not pay an argon2 verification per blob request.
const VERIFIED_TTL: Duration = Duration::from_secs(300);
const VERIFIED_CAPACITY: u64 = 10_000;
/// The admin port's challenge: Basic, which curl and the CLI speak.
const ADMIN_CHALLENGE: &str = "Basic realm=\"wharf admin\"";

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Principal {
    /// No credentials.
    Anonymous,
    /// Basic credentials, checked against the user's password hash.
    User { name: String },
    /// A bearer token this registry signed; limited to its `access`.
    Token(TokenGrant),
}

/// What a valid bearer token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TokenGrant {
    /// None for an anonymous token.
    subject: Option<String>,
    access: Vec<Access>,
}

impl Principal {
    /// The user name, if signed in.
    pub(crate) fn user(&self) -> Option<&str> {
        match self {
            Principal::Anonymous => None,
            Principal::User { name } => Some(name),
            Principal::Token(t) => t.subject.as_deref(),
        }
    }

    fn identity(&self) -> Identity<'_> {
        match self.user() {
            Some(name) => Identity::User(name),
            None => Identity::Anonymous,
        }
    }
}

/// Whether anonymous clients may pull a repository, as the caller knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Visibility {
    /// Anyone may pull: a public distribution, or an upstream with
    /// `anonymous_pull = true`.
    Public,
    /// Pulling needs a rule: a private distribution, or an upstream with
    /// `anonymous_pull = false`.
    Private,
    /// The name leads nowhere. Treated as public while no users are
    /// configured (the client gets the 404 it always got), as private
    /// otherwise, so anonymous clients cannot tell it from a private one.
    Unknown,
}

/// The answer to "may P do A on R".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    Allow,
    /// 401 with a challenge: the client may get there by signing in (or
    /// with a token of a wider scope).
    Challenge,
    /// 403: signed in, and the rules say no.
    Deny,
}

/// The scope a challenge names, so the client asks for the right token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    None,
    Repository { name: String, actions: Actions },
    Catalog,
}

impl Scope {
    fn as_string(&self) -> Option<String> {
        match self {
            Scope::None => None,
            Scope::Repository { name, actions } => Some(format!("repository:{name}:{}", actions.names().join(","))),
            Scope::Catalog => Some("registry:catalog:*".into()),
        }
    }
}

/// A `WWW-Authenticate` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Challenge(HeaderValue);

impl Challenge {
    pub(crate) fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }
}

/// Why a request was refused; `api/error.rs` and `admin/error.rs` choose
/// the statuses.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum AuthError {
    /// No usable credentials: missing where needed, wrong, or a bad token.
    #[error("{message}")]
    Unauthenticated { message: String, challenge: Challenge },
    /// Signed in, but not allowed.
    #[error("{0}")]
    Denied(String),
    /// A malformed token request.
    #[error("{0}")]
    BadRequest(String),
    /// The token service failed (the signing key).
    #[error("{0}")]
    Internal(String),
}

/// What the admin port serves, for its access decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AdminResource {
    /// `/healthz`, `/livez`, `/readyz`.
    Health,
    /// `/metrics`.
    Metrics,
    /// `/api/v1/...`.
    Api,
    /// A build into this repository: an admin, or a user who may push it.
    Build(String),
}

/// The request facts authentication reads.
#[derive(Clone, Copy)]
pub(crate) struct Caller<'a> {
    headers: &'a HeaderMap,
    /// `Host` (HTTP/1.1) or the URI's authority (HTTP/2).
    host: Option<&'a str>,
    /// Over TLS: a realm derived from `host` is `https://`.
    https: bool,
}

impl<'a> Caller<'a> {
    pub(crate) fn of<B>(req: &'a Request<B>) -> Caller<'a> {
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| req.headers().get(header::HOST).and_then(|v| v.to_str().ok()));
        let https = req.extensions().get::<crate::limits::OverTls>().is_some();
        Caller { headers: req.headers(), host, https }
    }
}

/// A user as the admin API shows it: never the hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UserView {
    pub(crate) name: String,
    pub(crate) admin: bool,
    /// Indexes into [`Auth::rules`] of the rules that cover the user.
    pub(crate) rules: Vec<usize>,
}

/// The authentication service; cheap to clone.
#[derive(Clone)]
pub(crate) struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    /// What the config says; replaced whole by [`Auth::reconfigure`]. A std
    /// RwLock held only to clone the Arc, never across an await; each check
    /// reads the settings current when it runs.
    settings: std::sync::RwLock<Arc<Settings>>,
    keys: keys::KeyRing,
    /// Hashes of (user, password) pairs verified recently. Salted per
    /// process, so the cache holds nothing a password could be found from.
    verified: moka::sync::Cache<[u8; 32], ()>,
    cache_salt: [u8; 32],
    /// Bounds argon2 verifications in flight (each holds 19 MiB and a
    /// blocking thread): a flood of wrong passwords queues here instead of
    /// exhausting memory and the blocking pool.
    verifying: Arc<tokio::sync::Semaphore>,
    /// Counts [`Auth::reconfigure`]s: what a client may see is remembered
    /// under it ([`Auth::viewer`]).
    generation: std::sync::atomic::AtomicU64,
}

/// The parts of [`Auth`] that come from `[auth]` and change on a reload.
struct Settings {
    policy: Policy,
    service: String,
    realm: Option<String>,
    token_ttl: Duration,
    basic: bool,
    open_metrics: bool,
}

impl Settings {
    fn new(config: &AuthConfig) -> Settings {
        Settings {
            policy: Policy::new(config.users.clone(), config.rules.clone()),
            service: config.service.clone(),
            realm: config.realm.clone(),
            token_ttl: config.token_ttl,
            basic: config.basic,
            open_metrics: config.open_metrics,
        }
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Auth {
    /// Builds the service from validated config, loading (or on first
    /// start creating) the signing keys: under `<storage>/auth/`, or in
    /// `shared`, the metadata store of a cluster's nodes (then it blocks:
    /// call it off the async runtime).
    pub(crate) fn open(config: &AuthConfig, storage: &Path, shared: Option<Arc<dyn Store>>) -> Result<Auth, String> {
        let keys = match shared {
            None => keys::KeyRing::open(&storage.join(AUTH_DIR), now()),
            Some(store) => keys::KeyRing::open_shared(store, now()),
        }
        .map_err(|e| e.to_string())?;
        let mut cache_salt = [0u8; 32];
        SystemRandom::new().fill(&mut cache_salt).map_err(|_| "the system random source failed".to_owned())?;
        Ok(Auth {
            inner: Arc::new(Inner {
                settings: std::sync::RwLock::new(Arc::new(Settings::new(config))),
                keys,
                verified: moka::sync::Cache::builder()
                    .max_capacity(VERIFIED_CAPACITY)
                    .time_to_live(VERIFIED_TTL)
                    .build(),
                cache_salt,
                verifying: Arc::new(tokio::sync::Semaphore::new(
                    std::thread::available_parallelism().map_or(2, |n| n.get()).max(2),
                )),
                generation: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// Reads the shared signing keys again, after another node rotated
    /// them. Blocks: call it off the async runtime.
    pub(crate) fn reload_keys(&self) -> Result<(), AuthError> {
        self.inner.keys.reload(now()).map_err(|e| AuthError::Internal(e.to_string()))
    }

    /// Applies a reloaded `[auth]`: users, rules and the token settings.
    /// Requests already past the gate finish under the old settings; the
    /// next request sees the new ones. Remembered password checks are
    /// forgotten, so a removed user or a changed password takes effect at
    /// once. The signing keys stay (they live under storage, not config).
    pub(crate) fn reconfigure(&self, config: &AuthConfig) {
        let settings = Arc::new(Settings::new(config));
        *self.inner.settings.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = settings;
        // After the swap: a viewer key of the new generation is never
        // paired with the old settings.
        self.inner.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.verified.invalidate_all();
    }

    /// A key two principals share only if they may list the same
    /// repositories under the current settings: what one was shown may be
    /// shown to the other (the Flatpak index remembers answers by it).
    pub(crate) fn viewer(&self, principal: &Principal) -> String {
        let generation = self.inner.generation.load(std::sync::atomic::Ordering::SeqCst);
        match principal {
            Principal::Anonymous => format!("{generation}/-"),
            Principal::User { name } => format!("{generation}/user:{name}"),
            Principal::Token(t) => format!("{generation}/token:{:?}:{:?}", t.subject, t.access),
        }
    }

    fn settings(&self) -> Arc<Settings> {
        self.inner.settings.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// True when someone can sign in (see `Policy::has_users`).
    pub(crate) fn has_users(&self) -> bool {
        self.settings().policy.has_users()
    }

    // -- authentication -------------------------------------------------

    /// Who the request's `Authorization` header says the client is. No
    /// header is anonymous; wrong credentials are an error (401), never
    /// anonymous, so a typo is noticed. `scope` goes into the challenge.
    pub(crate) async fn authenticate(&self, caller: Caller<'_>, scope: &Scope) -> Result<Principal, AuthError> {
        let Some(value) = caller.headers.get(header::AUTHORIZATION) else {
            return Ok(Principal::Anonymous);
        };
        let refuse = |message: String, error: Option<&str>| AuthError::Unauthenticated {
            message,
            challenge: self.challenge(caller, scope, error),
        };
        let value = value.to_str().map_err(|_| refuse("the Authorization header is not text".into(), None))?;
        match credentials(value) {
            Credentials::Bearer(token) => {
                let grant = self
                    .check_token(token)
                    .map_err(|e| refuse(format!("invalid token: {e}"), Some("invalid_token")))?;
                Ok(Principal::Token(grant))
            }
            Credentials::Basic { .. } if !self.settings().basic => Err(refuse(
                "Basic credentials are not accepted here (auth.basic is off): get a token from the realm".into(),
                None,
            )),
            Credentials::Basic { user, password } => {
                if self.check_password(&user, &password).await {
                    Ok(Principal::User { name: user })
                } else {
                    Err(refuse("wrong user name or password".into(), None))
                }
            }
            Credentials::Invalid(why) => Err(refuse(why.into(), None)),
        }
    }

    fn check_token(&self, token: &str) -> Result<TokenGrant, TokenError> {
        let claims = token::verify(&self.inner.keys, token, &self.settings().service, now())?;
        let subject = (!claims.sub.is_empty()).then_some(claims.sub);
        if let Some(user) = &subject {
            // A user removed from the config loses access at once, even
            // with a token that has not expired.
            if self.settings().policy.user(user).is_none() {
                return Err(TokenError::UnknownSubject(user.clone()));
            }
        }
        Ok(TokenGrant { subject, access: claims.access })
    }

    /// Verifies `password` for `user` on the blocking pool (argon2 is slow
    /// on purpose), remembering successes for a while. An unknown user
    /// costs as much as a wrong password, so timing tells nothing.
    async fn check_password(&self, user: &str, password: &str) -> bool {
        let key = self.cache_key(user, password);
        if self.inner.verified.contains_key(&key) {
            return true;
        }
        let phc = self.settings().policy.user(user).map(|u| u.password_hash.phc().to_owned());
        let password = password.to_owned();
        // The semaphore is never closed, so acquiring fails only if it were.
        let Ok(permit) = Arc::clone(&self.inner.verifying).acquire_owned().await else {
            return false;
        };
        // The permit goes with the work: a client that hangs up does not
        // free a place while its verification still runs.
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            match phc {
                Some(phc) => password::verify(&phc, &password),
                None => {
                    password::verify_nothing(&password);
                    false
                }
            }
        })
        .await
        .unwrap_or(false);
        if ok {
            self.inner.verified.insert(key, ());
        } else {
            tracing::info!(user = %user, "sign-in refused: wrong user name or password");
        }
        ok
    }

    fn cache_key(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.inner.cache_salt);
        h.update((user.len() as u64).to_be_bytes());
        h.update(user.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    // -- authorization --------------------------------------------------

    fn is_public(&self, visibility: Visibility) -> bool {
        match visibility {
            Visibility::Public => true,
            Visibility::Private => false,
            Visibility::Unknown => !self.has_users(),
        }
    }

    /// May `principal` do `action` on `repository`? Pulling a public
    /// repository is always allowed; anything else needs a rule, and a
    /// token must also carry the action in its `access`. Anonymous
    /// clients are challenged, never denied, so they cannot tell a private
    /// repository from one they may not see; a token without the action
    /// is challenged too, so the client fetches a wider one.
    pub(crate) fn authorize(
        &self,
        principal: &Principal,
        repository: &str,
        action: Action,
        visibility: Visibility,
    ) -> Decision {
        if action == Action::Pull && self.is_public(visibility) {
            return Decision::Allow;
        }
        let by_rules = self.settings().policy.granted(principal.identity(), repository).contains(action);
        match principal {
            Principal::Anonymous if by_rules => Decision::Allow,
            Principal::Anonymous => Decision::Challenge,
            Principal::User { .. } if by_rules => Decision::Allow,
            Principal::User { .. } => Decision::Deny,
            Principal::Token(t) if !by_rules => {
                if t.subject.is_none() {
                    Decision::Challenge
                } else {
                    Decision::Deny
                }
            }
            Principal::Token(t) => {
                if t.access.iter().any(|a| a.grants("repository", repository, action.as_str())) {
                    Decision::Allow
                } else {
                    Decision::Challenge
                }
            }
        }
    }

    /// `GET /v2/`: once users exist, anonymous clients are challenged
    /// there, which is how podman, skopeo and docker learn where the token
    /// endpoint is. Without users it answers 200 as it always did.
    pub(crate) fn authorize_base(&self, principal: &Principal) -> Decision {
        if self.has_users() && *principal == Principal::Anonymous {
            Decision::Challenge
        } else {
            Decision::Allow
        }
    }

    /// Whether the catalog shows `repository` to `principal`: what it may
    /// pull. A token counts with its subject's rules when it carries
    /// `registry:catalog:*`, else with its own access only.
    pub(crate) fn may_list(&self, principal: &Principal, repository: &str, visibility: Visibility) -> bool {
        if self.is_public(visibility) {
            return true;
        }
        let by_rules = self.settings().policy.granted(principal.identity(), repository).contains(Action::Pull);
        match principal {
            Principal::Anonymous | Principal::User { .. } => by_rules,
            Principal::Token(t) => {
                by_rules
                    && t.access.iter().any(|a| {
                        a.grants("registry", "catalog", "*") || a.grants("repository", repository, "pull")
                    })
            }
        }
    }

    /// The Bearer challenge: `realm` (configured, or `http://<Host>/token`),
    /// `service`, and the scope the request needs.
    pub(crate) fn challenge(&self, caller: Caller<'_>, scope: &Scope, error: Option<&str>) -> Challenge {
        let realm = match &self.settings().realm {
            Some(r) => r.clone(),
            None => format!("{}://{}/token", if caller.https { "https" } else { "http" }, clean_host(caller.host)),
        };
        let mut v = format!("Bearer realm=\"{realm}\",service=\"{}\"", self.settings().service);
        if let Some(scope) = scope.as_string() {
            v.push_str(&format!(",scope=\"{scope}\""));
        }
        if let Some(error) = error {
            v.push_str(&format!(",error=\"{error}\""));
        }
        // Every part was validated (config) or cleaned (host, names); the
        // fallback only keeps a response well-formed if that ever changed.
        Challenge(HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("Bearer")))
    }

    /// Turns a decision into the refusal a caller returns.
    pub(crate) fn refuse(&self, caller: Caller<'_>, scope: &Scope, decision: Decision, what: &str) -> Result<(), AuthError> {
        match decision {
            Decision::Allow => Ok(()),
            Decision::Challenge => Err(AuthError::Unauthenticated {
                message: format!("authentication required to {what}"),
                challenge: self.challenge(caller, scope, None),
            }),
            Decision::Deny => Err(AuthError::Denied(format!("not allowed to {what}"))),
        }
    }

    // -- the admin port -------------------------------------------------

    /// May this request reach `resource` on the admin port? With no users
    /// the admin port stays open (it listens on loopback by default);
    /// health and metrics stay open while `auth.open_metrics` is true;
    /// everything else needs a user with the admin role, by Basic
    /// credentials or by a token carrying `registry:admin:*`; but a build
    /// is also open to a user the rules let push its repository (by a
    /// token carrying that push). Who the caller is, for what the handler
    /// checks itself (a build's base images are pulled as that caller).
    pub(crate) async fn authorize_admin(&self, headers: &HeaderMap, resource: AdminResource) -> Result<Principal, AuthError> {
        if !self.has_users() {
            return Ok(Principal::Anonymous);
        }
        if self.settings().open_metrics && matches!(resource, AdminResource::Health | AdminResource::Metrics) {
            return Ok(Principal::Anonymous);
        }
        let refuse = |message: &str| AuthError::Unauthenticated {
            message: message.into(),
            challenge: Challenge(HeaderValue::from_static(ADMIN_CHALLENGE)),
        };
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(refuse("the admin API needs a user with the admin role"));
        };
        let value = value.to_str().map_err(|_| refuse("the Authorization header is not text"))?;
        let principal = match credentials(value) {
            Credentials::Basic { user, password } => {
                if !self.check_password(&user, &password).await {
                    return Err(refuse("wrong user name or password"));
                }
                Principal::User { name: user }
            }
            Credentials::Bearer(token) => {
                let grant = self.check_token(token).map_err(|e| refuse(&format!("invalid token: {e}")))?;
                if grant.subject.is_none() {
                    return Err(refuse("the admin API needs a user with the admin role"));
                }
                Principal::Token(grant)
            }
            Credentials::Invalid(why) => return Err(refuse(why)),
        };
        let (user, admin_scope) = match &principal {
            Principal::User { name } => (name.clone(), true),
            Principal::Token(grant) => {
                (grant.subject.clone().unwrap_or_default(), grant.access.iter().any(|a| a.grants("registry", "admin", "*")))
            }
            Principal::Anonymous => return Err(refuse("the admin API needs a user with the admin role")),
        };
        if admin_scope && self.settings().policy.is_admin(&user) {
            return Ok(principal);
        }
        if let AdminResource::Build(repository) = &resource {
            return match self.authorize(&principal, repository, Action::Push, Visibility::Unknown) {
                Decision::Allow => Ok(principal),
                _ => Err(AuthError::Denied(format!("user {user:?} may not push {repository}"))),
            };
        }
        if !admin_scope {
            return Err(AuthError::Denied("the token does not carry registry:admin:*".into()));
        }
        Err(AuthError::Denied(format!("user {user:?} does not have the admin role")))
    }

    /// Every user, by name, with the rules that cover them.
    pub(crate) fn users(&self) -> Vec<UserView> {
        let settings = self.settings();
        let policy = &settings.policy;
        policy
            .users()
            .map(|u| UserView { name: u.name.clone(), admin: u.admin, rules: policy.rules_for(&u.name) })
            .collect()
    }

    /// The rules, in config order.
    pub(crate) fn rules(&self) -> Vec<Rule> {
        self.settings().policy.rules().to_vec()
    }

    /// The signing keys (current first); never private material.
    pub(crate) fn keys(&self) -> Vec<KeyInfo> {
        self.inner.keys.list()
    }

    /// Rotates the signing key (see `keys.rs`). Blocking file I/O: call it
    /// from the blocking pool.
    pub(crate) fn rotate_key(&self) -> Result<Vec<KeyInfo>, AuthError> {
        let keys = self.inner.keys.rotate(self.settings().token_ttl, now()).map_err(|e| AuthError::Internal(e.to_string()))?;
        tracing::info!(kid = %self.inner.keys.current_kid(), "token signing key rotated");
        Ok(keys)
    }

    // -- the token endpoint ---------------------------------------------

    /// `GET /token`: Basic credentials (or none, for an anonymous token)
    /// and the requested `scope`s; the token grants their intersection
    /// with what the rules allow. `visibility` tells whether a name is
    /// public. Returns the JSON body.
    pub(crate) async fn issue_token(
        &self,
        caller: Caller<'_>,
        query: Option<&str>,
        visibility: impl Fn(&RepositoryName) -> Visibility,
    ) -> Result<Bytes, AuthError> {
        let request = TokenRequest::parse(query)?;
        if let Some(service) = &request.service {
            if *service != self.settings().service {
                return Err(AuthError::BadRequest(format!(
                    "service {service:?} is not this registry's ({:?})",
                    self.settings().service
                )));
            }
        }
        let refuse = |message: &str| AuthError::Unauthenticated {
            message: message.into(),
            challenge: Challenge(
                HeaderValue::from_str(&format!("Basic realm=\"{}\"", self.settings().service))
                    .unwrap_or_else(|_| HeaderValue::from_static("Basic")),
            ),
        };
        let user = match caller.headers.get(header::AUTHORIZATION) {
            None => None,
            Some(value) => {
                let value = value.to_str().map_err(|_| refuse("the Authorization header is not text"))?;
                match credentials(value) {
                    // Empty Basic credentials (`Og==`, ":") are what some
                    // clients send when they have none: no one, not a
                    // wrong password.
                    Credentials::Basic { user, password } if user.is_empty() && password.is_empty() => None,
                    Credentials::Basic { user, password } => {
                        if !self.check_password(&user, &password).await {
                            return Err(refuse("wrong user name or password"));
                        }
                        Some(user)
                    }
                    Credentials::Bearer(_) => return Err(refuse("the token endpoint takes Basic credentials")),
                    Credentials::Invalid(why) => return Err(refuse(why)),
                }
            }
        };
        let identity = match &user {
            Some(u) => Identity::User(u),
            None => Identity::Anonymous,
        };
        let mut access = Vec::new();
        for (name, requested) in &request.repositories {
            let mut may = self.settings().policy.granted(identity, name.as_str());
            if self.is_public(visibility(name)) {
                may = may.with(Action::Pull);
            }
            let granted = requested.intersect(may);
            if !granted.is_empty() {
                access.push(Access {
                    kind: "repository".into(),
                    name: name.to_string(),
                    actions: granted.names().into_iter().map(str::to_owned).collect(),
                });
            }
        }
        if request.catalog {
            access.push(Access { kind: "registry".into(), name: "catalog".into(), actions: vec!["*".into()] });
        }
        if request.admin && user.as_deref().is_some_and(|u| self.settings().policy.is_admin(u)) {
            access.push(Access { kind: "registry".into(), name: "admin".into(), actions: vec!["*".into()] });
        }
        let issued = now();
        let ttl = self.settings().token_ttl.as_secs();
        let claims = Claims {
            iss: token::ISSUER.into(),
            sub: user.clone().unwrap_or_default(),
            aud: Audience::One(self.settings().service.clone()),
            exp: issued + ttl,
            nbf: issued,
            iat: issued,
            jti: token::new_jti().map_err(|e| AuthError::Internal(e.to_string()))?,
            access,
        };
        let signed = match token::sign(&self.inner.keys, &claims) {
            // A rotation raced the signature: once more with the new key.
            Err(TokenError::Signing(_)) => token::sign(&self.inner.keys, &claims),
            other => other,
        }
        .map_err(|e| AuthError::Internal(e.to_string()))?;
        let issued_at = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(issued)).to_string();
        let body = serde_json::json!({
            "token": signed,
            "access_token": signed,
            "expires_in": ttl,
            "issued_at": issued_at,
        });
        Ok(Bytes::from(body.to_string()))
    }
}

/// What an `Authorization` header holds.
pub(crate) enum Credentials<'a> {
    Basic { user: String, password: String },
    Bearer(&'a str),
    Invalid(&'static str),
}

pub(crate) fn credentials(value: &str) -> Credentials<'_> {
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Credentials::Bearer(rest);
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Credentials::Invalid("the Authorization scheme must be Basic or Bearer");
    }
    let Some(pair) = STANDARD.decode(rest).ok().and_then(|raw| String::from_utf8(raw).ok()) else {
        return Credentials::Invalid("the Basic credentials are not base64 of user:password");
    };
    match pair.split_once(':') {
        Some((user, password)) => Credentials::Basic { user: user.to_owned(), password: password.to_owned() },
        None => Credentials::Invalid("the Basic credentials are not base64 of user:password"),
    }
}

/// The Host for a realm, or `localhost` if it is absent or holds anything
/// but host and port characters (it goes inside a quoted header value).
fn clean_host(host: Option<&str>) -> &str {
    match host {
        Some(h)
            if !h.is_empty()
                && h.len() <= 255
                && h.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')) =>
        {
            h
        }
        _ => "localhost",
    }
}

/// A parsed `GET /token` query.
#[derive(Debug, Default, PartialEq, Eq)]
struct TokenRequest {
    service: Option<String>,
    /// Requested actions per repository, merged over repeated scopes.
    repositories: BTreeMap<RepositoryName, Actions>,
    catalog: bool,
    admin: bool,
}

impl TokenRequest {
    /// `scope` may repeat and hold several space-separated scopes;
    /// `account`, `client_id` and `offline_token` are accepted and not
    /// needed (the Basic credentials say who; no refresh tokens are
    /// issued), and so is any other parameter: clients add their own, and
    /// refusing them would break a login for nothing. Scopes of unknown
    /// types or invalid names grant nothing.
    fn parse(query: Option<&str>) -> Result<TokenRequest, AuthError> {
        let mut out = TokenRequest::default();
        for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match k.as_ref() {
                "service" => out.service = Some(v.into_owned()),
                "scope" => {
                    for scope in v.split(' ').filter(|s| !s.is_empty()) {
                        out.add_scope(scope);
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    fn add_scope(&mut self, scope: &str) {
        let Some((kind, rest)) = scope.split_once(':') else { return };
        let Some((name, actions)) = rest.rsplit_once(':') else { return };
        // `repository(plugin)` is a repository with a class.
        let kind = kind.split_once('(').map_or(kind, |(k, _)| k);
        match (kind, name) {
            ("repository", name) => {
                let Ok(name) = name.parse::<RepositoryName>() else { return };
                let requested = actions.split(',').fold(Actions::NONE, |acc, a| match a {
                    "*" => acc.union(Actions::of(Action::ALL)),
                    a => Action::parse(a).map_or(acc, |a| acc.with(a)),
                });
                let slot = self.repositories.entry(name).or_default();
                *slot = slot.union(requested);
            }
            ("registry", "catalog") => self.catalog = true,
            ("registry", "admin") => self.admin = true,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
