//! The `Auth` service end to end, without HTTP servers: sign-in, the
//! decision matrix, challenges, token issuance and the admin port.

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, Request};

use super::*;

fn config(users: &[(&str, &str, bool)], rules: Vec<Rule>) -> AuthConfig {
    AuthConfig {
        realm: None,
        service: "wharf".into(),
        token_ttl: Duration::from_secs(300),
        basic: true,
        open_metrics: true,
        users: users
            .iter()
            .map(|(name, password, admin)| User {
                name: (*name).into(),
                password_hash: PasswordHash::new(hash_password(password).unwrap()),
                admin: *admin,
            })
            .collect(),
        rules,
    }
}

fn rule(grantees: &[Grantee], repos: &[&str], actions: &[Action]) -> Rule {
    Rule {
        grantees: grantees.to_vec(),
        repositories: repos.iter().map(|r| RepositoryPattern::parse(r).unwrap()).collect(),
        actions: Actions::of(actions.iter().copied()),
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    auth: Auth,
}

fn fixture(basic: bool) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = config(
        &[("reader", "r-pass", false), ("writer", "w-pass", false), ("root", "root-pass", true)],
        vec![
            rule(&[Grantee::User("reader".into()), Grantee::User("writer".into())], &["team/*"], &[Action::Pull]),
            rule(&[Grantee::User("writer".into())], &["team/*"], &[Action::Push]),
        ],
    );
    c.basic = basic;
    let auth = Auth::open(&c, tmp.path(), None).unwrap();
    Fixture { _tmp: tmp, auth }
}

fn request(authorization: Option<String>) -> Request<()> {
    let mut b = Request::builder().uri("/v2/").header("Host", "registry.test:5000");
    if let Some(a) = authorization {
        b = b.header("Authorization", a);
    }
    b.body(()).unwrap()
}

fn basic(user: &str, password: &str) -> Option<String> {
    Some(format!("Basic {}", STANDARD.encode(format!("{user}:{password}"))))
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

const ALL: fn(&RepositoryName) -> Visibility = |_| Visibility::Private;

async fn token_for(auth: &Auth, who: Option<(&str, &str)>, query: &str) -> (String, serde_json::Value) {
    let req = request(who.and_then(|(u, p)| basic(u, p)));
    let body = auth.issue_token(Caller::of(&req), Some(query), ALL).await.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let token = json["token"].as_str().unwrap().to_owned();
    let claims = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
    assert_eq!(json["access_token"], json["token"]);
    assert_eq!(json["expires_in"], 300);
    assert!(json["issued_at"].as_str().unwrap().ends_with('Z'), "{json}");
    (token, claims)
}

async fn principal(auth: &Auth, authorization: Option<String>) -> Result<Principal, AuthError> {
    let req = request(authorization);
    auth.authenticate(Caller::of(&req), &Scope::None).await
}

#[tokio::test]
async fn basic_credentials_sign_in_and_wrong_ones_are_refused_not_anonymous() {
    let f = fixture(true);
    assert_eq!(principal(&f.auth, None).await.unwrap(), Principal::Anonymous);
    assert_eq!(principal(&f.auth, basic("reader", "r-pass")).await.unwrap(), Principal::User { name: "reader".into() });
    // Cached now; still checked against the right password.
    assert_eq!(principal(&f.auth, basic("reader", "r-pass")).await.unwrap(), Principal::User { name: "reader".into() });
    for bad in [basic("reader", "wrong"), basic("nobody", "r-pass"), Some("Basic !!!".into()), Some("Digest x".into())] {
        match principal(&f.auth, bad.clone()).await {
            Err(AuthError::Unauthenticated { challenge, .. }) => {
                let v = challenge.header_value();
                assert!(v.to_str().unwrap().starts_with("Bearer realm=\"http://registry.test:5000/token\""), "{v:?}");
            }
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn basic_on_the_registry_needs_auth_basic() {
    let f = fixture(false);
    assert!(matches!(
        principal(&f.auth, basic("reader", "r-pass")).await,
        Err(AuthError::Unauthenticated { .. })
    ));
    // The token endpoint always takes Basic.
    let (_, claims) = token_for(&f.auth, Some(("reader", "r-pass")), "service=wharf&scope=repository:team/app:pull").await;
    assert_eq!(claims["sub"], "reader");
}

#[tokio::test]
async fn the_decision_matrix() {
    let f = fixture(true);
    let a = &f.auth;
    let anon = Principal::Anonymous;
    let reader = Principal::User { name: "reader".into() };
    let writer = Principal::User { name: "writer".into() };
    let root = Principal::User { name: "root".into() };
    use Action::*;
    use Decision::*;
    use Visibility::*;
    // Public pulls are for everyone; private ones need a rule.
    assert_eq!(a.authorize(&anon, "team/app", Pull, Public), Allow);
    assert_eq!(a.authorize(&anon, "team/app", Pull, Private), Challenge);
    assert_eq!(a.authorize(&anon, "nowhere", Pull, Unknown), Challenge, "with users, unknown is private");
    assert_eq!(a.authorize(&reader, "team/app", Pull, Private), Allow);
    assert_eq!(a.authorize(&reader, "other/app", Pull, Private), Deny);
    assert_eq!(a.authorize(&reader, "team/app", Push, Public), Deny);
    assert_eq!(a.authorize(&writer, "team/app", Push, Private), Allow);
    assert_eq!(a.authorize(&writer, "team/app", Delete, Private), Deny);
    // The admin role is for the admin API, not for repositories.
    assert_eq!(a.authorize(&root, "team/app", Pull, Private), Deny);
    // Anonymous clients are never denied: challenged, even for pushes.
    assert_eq!(a.authorize(&anon, "team/app", Push, Public), Challenge);
    assert_eq!(a.authorize_base(&anon), Challenge);
    assert_eq!(a.authorize_base(&reader), Allow);
}

#[tokio::test]
async fn without_users_pulls_stay_open_and_nothing_else_is_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let auth = Auth::open(&config(&[], vec![]), tmp.path(), None).unwrap();
    let anon = Principal::Anonymous;
    assert_eq!(auth.authorize(&anon, "x", Action::Pull, Visibility::Unknown), Decision::Allow);
    assert_eq!(auth.authorize(&anon, "x", Action::Pull, Visibility::Private), Decision::Challenge);
    assert_eq!(auth.authorize(&anon, "x", Action::Push, Visibility::Public), Decision::Challenge);
    assert_eq!(auth.authorize_base(&anon), Decision::Allow);
    assert!(auth.authorize_admin(&HeaderMap::new(), AdminResource::Api).await.is_ok());
}

#[tokio::test]
async fn tokens_grant_the_intersection_of_the_request_and_the_rules() {
    let f = fixture(true);
    let query = "service=wharf&scope=repository:team/app:pull,push,delete&scope=repository:other/x:pull \
                 repository:team/app:pull&account=reader&offline_token=true";
    let query = query.replace(' ', "%20");
    let (_, claims) = token_for(&f.auth, Some(("reader", "r-pass")), &query).await;
    assert_eq!(claims["iss"], "wharf");
    assert_eq!(claims["aud"], "wharf");
    assert_eq!(claims["sub"], "reader");
    assert_eq!(claims["access"], serde_json::json!([{"type": "repository", "name": "team/app", "actions": ["pull"]}]));
    let exp = claims["exp"].as_u64().unwrap();
    assert_eq!(exp - claims["iat"].as_u64().unwrap(), 300);
    assert!(claims["nbf"].is_u64() && claims["jti"].as_str().unwrap().len() == 32);

    let (_, claims) = token_for(&f.auth, Some(("writer", "w-pass")), "scope=repository:team/app:*").await;
    assert_eq!(claims["access"][0]["actions"], serde_json::json!(["pull", "push"]));

    // Anonymous: only what is public.
    let req = request(None);
    let body = f
        .auth
        .issue_token(Caller::of(&req), Some("scope=repository:pub/x:pull,push&scope=repository:team/app:pull"), |n| {
            if n.as_str().starts_with("pub/") {
                Visibility::Public
            } else {
                Visibility::Private
            }
        })
        .await
        .unwrap();
    let token = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["token"].as_str().unwrap().to_owned();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(claims["sub"], "");
    assert_eq!(claims["access"], serde_json::json!([{"type": "repository", "name": "pub/x", "actions": ["pull"]}]));
}

#[tokio::test]
async fn token_requests_with_bad_credentials_or_another_service_are_refused() {
    let f = fixture(true);
    let req = request(basic("reader", "nope"));
    assert!(matches!(
        f.auth.issue_token(Caller::of(&req), Some("service=wharf"), ALL).await,
        Err(AuthError::Unauthenticated { .. })
    ));
    let req = request(basic("reader", "r-pass"));
    assert!(matches!(
        f.auth.issue_token(Caller::of(&req), Some("service=elsewhere"), ALL).await,
        Err(AuthError::BadRequest(_))
    ));
    // Parameters of other clients' flavours are ignored, not refused.
    assert!(f.auth.issue_token(Caller::of(&req), Some("client_id=docker&grant_type=x"), ALL).await.is_ok());
    // Empty credentials are anonymous, granted what is public only; a
    // user name with no password is still checked, and refused.
    let (_, claims) = token_for(&f.auth, Some(("", "")), "scope=repository:team/app:pull").await;
    assert_eq!((claims["sub"].as_str(), claims["access"].as_array().map(Vec::len)), (Some(""), Some(0)));
    let req = request(basic("reader", ""));
    assert!(matches!(
        f.auth.issue_token(Caller::of(&req), Some("service=wharf"), ALL).await,
        Err(AuthError::Unauthenticated { .. })
    ));
}

#[tokio::test]
async fn a_token_is_limited_to_its_access_and_a_narrow_one_is_challenged() {
    let f = fixture(false);
    let (token, _) = token_for(&f.auth, Some(("writer", "w-pass")), "scope=repository:team/app:pull").await;
    let p = principal(&f.auth, bearer(&token)).await.unwrap();
    assert_eq!(p.user(), Some("writer"));
    assert_eq!(f.auth.authorize(&p, "team/app", Action::Pull, Visibility::Private), Decision::Allow);
    // The rules allow a push, the token does not: ask for a wider token.
    assert_eq!(f.auth.authorize(&p, "team/app", Action::Push, Visibility::Private), Decision::Challenge);
    // Neither allows this one.
    assert_eq!(f.auth.authorize(&p, "other/app", Action::Pull, Visibility::Private), Decision::Deny);
    assert_eq!(f.auth.authorize(&p, "other/app", Action::Pull, Visibility::Public), Decision::Allow);
    // An anonymous token on a private repository: sign in.
    let (anon, _) = token_for(&f.auth, None, "scope=repository:team/app:pull").await;
    let p = principal(&f.auth, bearer(&anon)).await.unwrap();
    assert_eq!(p.user(), None);
    assert_eq!(f.auth.authorize(&p, "team/app", Action::Pull, Visibility::Private), Decision::Challenge);
}

#[tokio::test]
async fn forged_or_foreign_tokens_are_refused_with_invalid_token() {
    let f = fixture(false);
    let (token, _) = token_for(&f.auth, Some(("reader", "r-pass")), "scope=repository:team/app:pull").await;
    let mut forged = token.clone().into_bytes();
    let i = forged.len() - 5;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    match principal(&f.auth, bearer(&forged)).await {
        Err(AuthError::Unauthenticated { challenge, message }) => {
            assert!(challenge.header_value().to_str().unwrap().contains("error=\"invalid_token\""));
            assert!(message.contains("invalid token"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Another wharf's token (another key) is just as foreign.
    let other = fixture(false);
    let (theirs, _) = token_for(&other.auth, Some(("reader", "r-pass")), "").await;
    assert!(principal(&f.auth, bearer(&theirs)).await.is_err());
}

#[tokio::test]
async fn challenges_name_realm_service_and_scope() {
    let f = fixture(false);
    let req = request(None);
    let scope = Scope::Repository { name: "team/app".into(), actions: Actions::of([Action::Pull, Action::Push]) };
    let c = f.auth.challenge(Caller::of(&req), &scope, None);
    assert_eq!(
        c.header_value(),
        "Bearer realm=\"http://registry.test:5000/token\",service=\"wharf\",scope=\"repository:team/app:pull,push\""
    );
    let req = Request::builder().uri("/v2/").header("Host", "evil\"host").body(()).unwrap();
    let c = f.auth.challenge(Caller::of(&req), &Scope::Catalog, None);
    assert_eq!(c.header_value(), "Bearer realm=\"http://localhost/token\",service=\"wharf\",scope=\"registry:catalog:*\"");
    // Over TLS the derived realm is https, or clients would send their
    // credentials in the clear (or to a port that only speaks TLS).
    let mut tls = request(None);
    tls.extensions_mut().insert(crate::limits::OverTls);
    let c = f.auth.challenge(Caller::of(&tls), &Scope::None, None);
    assert!(c.header_value().to_str().unwrap().starts_with("Bearer realm=\"https://registry.test:5000/token\""), "{c:?}");
    let tmp = tempfile::tempdir().unwrap();
    let mut c = config(&[], vec![]);
    c.realm = Some("https://auth.example/token".into());
    let auth = Auth::open(&c, tmp.path(), None).unwrap();
    assert!(auth.challenge(Caller::of(&req), &Scope::None, None).header_value().to_str().unwrap().starts_with("Bearer realm=\"https://auth.example/token\""));
}

#[tokio::test]
async fn the_admin_port_needs_the_admin_role_except_open_metrics() {
    let f = fixture(false);
    let headers = |a: Option<String>| {
        let mut h = HeaderMap::new();
        if let Some(a) = a {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(&a).unwrap());
        }
        h
    };
    assert!(f.auth.authorize_admin(&headers(None), AdminResource::Metrics).await.is_ok());
    assert!(f.auth.authorize_admin(&headers(None), AdminResource::Health).await.is_ok());
    assert!(matches!(f.auth.authorize_admin(&headers(None), AdminResource::Api).await, Err(AuthError::Unauthenticated { .. })));
    assert!(matches!(
        f.auth.authorize_admin(&headers(basic("root", "bad")), AdminResource::Api).await,
        Err(AuthError::Unauthenticated { .. })
    ));
    assert!(matches!(
        f.auth.authorize_admin(&headers(basic("reader", "r-pass")), AdminResource::Api).await,
        Err(AuthError::Denied(_))
    ));
    assert!(f.auth.authorize_admin(&headers(basic("root", "root-pass")), AdminResource::Api).await.is_ok());
    // Bearer: an admin's token with registry:admin:*.
    let (plain, _) = token_for(&f.auth, Some(("root", "root-pass")), "scope=repository:team/app:pull").await;
    assert!(matches!(f.auth.authorize_admin(&headers(bearer(&plain)), AdminResource::Api).await, Err(AuthError::Denied(_))));
    let (admin, claims) = token_for(&f.auth, Some(("root", "root-pass")), "scope=registry:admin:*").await;
    assert_eq!(claims["access"][0]["name"], "admin");
    assert!(f.auth.authorize_admin(&headers(bearer(&admin)), AdminResource::Api).await.is_ok());
    let (_, claims) = token_for(&f.auth, Some(("reader", "r-pass")), "scope=registry:admin:*").await;
    assert_eq!(claims["access"], serde_json::json!([]), "only admins get the admin scope");

    // A build: admins, and users the rules let push the repository.
    let build = |r: &str| AdminResource::Build(r.into());
    let who = f.auth.authorize_admin(&headers(basic("writer", "w-pass")), build("team/tool")).await.unwrap();
    assert_eq!(who, Principal::User { name: "writer".into() });
    assert!(matches!(f.auth.authorize_admin(&headers(basic("writer", "w-pass")), build("other/tool")).await, Err(AuthError::Denied(_))));
    assert!(matches!(f.auth.authorize_admin(&headers(basic("reader", "r-pass")), build("team/tool")).await, Err(AuthError::Denied(_))));
    assert!(matches!(f.auth.authorize_admin(&headers(basic("writer", "w-pass")), AdminResource::Api).await, Err(AuthError::Denied(_))));
    assert!(f.auth.authorize_admin(&headers(basic("root", "root-pass")), build("anything/at-all")).await.is_ok());
    assert!(matches!(f.auth.authorize_admin(&headers(None), build("team/tool")).await, Err(AuthError::Unauthenticated { .. })));
    let (push, _) = token_for(&f.auth, Some(("writer", "w-pass")), "scope=repository:team/tool:push,pull").await;
    assert!(f.auth.authorize_admin(&headers(bearer(&push)), build("team/tool")).await.is_ok(), "a token carrying the push");
    let (pull, _) = token_for(&f.auth, Some(("writer", "w-pass")), "scope=repository:team/tool:pull").await;
    assert!(f.auth.authorize_admin(&headers(bearer(&pull)), build("team/tool")).await.is_err(), "a token without it");
}

#[tokio::test]
async fn the_catalog_shows_what_the_principal_may_pull() {
    let f = fixture(false);
    let anon = Principal::Anonymous;
    let reader = Principal::User { name: "reader".into() };
    assert!(f.auth.may_list(&anon, "pub", Visibility::Public));
    assert!(!f.auth.may_list(&anon, "team/app", Visibility::Private));
    assert!(f.auth.may_list(&reader, "team/app", Visibility::Private));
    let (token, _) = token_for(&f.auth, Some(("reader", "r-pass")), "scope=registry:catalog:*").await;
    let p = principal(&f.auth, bearer(&token)).await.unwrap();
    assert!(f.auth.may_list(&p, "team/app", Visibility::Private));
    assert!(!f.auth.may_list(&p, "other/app", Visibility::Private));
}

#[tokio::test]
async fn users_are_listed_with_their_rules_and_keys_rotate() {
    let f = fixture(false);
    let users = f.auth.users();
    let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["reader", "root", "writer"]);
    assert_eq!(users[2].rules, vec![0, 1]);
    assert!(users[1].admin && users[1].rules.is_empty());
    let (token, _) = token_for(&f.auth, Some(("reader", "r-pass")), "scope=repository:team/app:pull").await;
    let before = f.auth.keys();
    let after = f.auth.rotate_key().unwrap();
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(after[1].kid, before[0].kid);
    // Tokens signed before the rotation still work.
    assert!(principal(&f.auth, bearer(&token)).await.is_ok());
}

#[tokio::test]
async fn a_reconfigure_applies_users_at_once_even_to_remembered_sign_ins() {
    let f = fixture(true);
    // Signed in once: the check is remembered.
    assert!(principal(&f.auth, basic("reader", "r-pass")).await.is_ok());
    let (token, _) = token_for(&f.auth, Some(("reader", "r-pass")), "").await;
    // reader is gone, writer has a new password, newcomer arrives.
    f.auth.reconfigure(&config(&[("writer", "new-pass", false), ("newcomer", "n-pass", false)], vec![]));
    assert!(principal(&f.auth, basic("reader", "r-pass")).await.is_err(), "a removed user's remembered sign-in");
    assert!(principal(&f.auth, bearer(&token)).await.is_err(), "a removed user's token");
    assert!(principal(&f.auth, basic("writer", "w-pass")).await.is_err(), "the old password");
    assert!(principal(&f.auth, basic("writer", "new-pass")).await.is_ok());
    assert!(principal(&f.auth, basic("newcomer", "n-pass")).await.is_ok());
    assert_eq!(f.auth.users().len(), 2);
    assert!(f.auth.rules().is_empty());
}
