//! What it takes for gcp_auth 0.12 to use the HTTPS token endpoint.
//!
//! gcp_auth builds its own HTTP client (hyper-rustls, `https_or_http`) with
//! the *system's* root certificates, loaded by rustls-native-certs when a
//! `CustomServiceAccount` is made; it offers no way to add a root. Plain
//! `http://` token URIs work as they are (the test-app's default `token_uri`).
//! For `https://`, the only door is rustls-native-certs' `SSL_CERT_FILE`
//! variable, which replaces the system store with the named file. This test
//! proves both halves: without the variable the mock's CA is not trusted,
//! with it the token is fetched. It is alone in its test binary because it
//! changes the process environment.

use gcp_auth::TokenProvider;
use nudge_test_app::TestAppConfig;

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

#[test]
fn gcp_auth_reaches_the_https_token_endpoint_only_with_ssl_cert_file() {
    // A current-thread runtime: no worker threads exist that could read the
    // environment while it is changed below.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let app = nudge_test_app::start(TestAppConfig {
            oauth_token_uri_https: true,
            ..TestAppConfig::default()
        })
        .await
        .unwrap();
        assert!(app.oauth_token_url().starts_with("https://"));
        let limit = std::time::Duration::from_secs(20);

        // Without SSL_CERT_FILE: the system roots do not include the mock's
        // CA, so the TLS handshake (and every retry) fails.
        // SAFETY: this is the only test in this binary, and the runtime
        // has no other threads.
        unsafe { std::env::remove_var("SSL_CERT_FILE") };
        let untrusted =
            match gcp_auth::CustomServiceAccount::from_json(&app.fcm_service_account_json()) {
                // A machine with no system roots at all fails here already.
                Err(_) => None,
                Ok(sa) => Some(
                    tokio::time::timeout(limit, sa.token(&[SCOPE]))
                        .await
                        .unwrap(),
                ),
            };
        assert!(
            untrusted.as_ref().is_none_or(|r| r.is_err()),
            "gcp_auth must not trust the mock's CA by itself"
        );
        assert_eq!(app.stats().oauth_tokens_issued, 0);

        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, app.ca_cert_pem()).unwrap();
        // SAFETY: as above.
        unsafe { std::env::set_var("SSL_CERT_FILE", &ca) };
        let sa =
            gcp_auth::CustomServiceAccount::from_json(&app.fcm_service_account_json()).unwrap();
        let token = tokio::time::timeout(limit, sa.token(&[SCOPE]))
            .await
            .unwrap()
            .unwrap();
        assert!(token.as_str().starts_with("ya29."));
        assert_eq!(app.stats().oauth_tokens_issued, 1);
        // SAFETY: as above.
        unsafe { std::env::remove_var("SSL_CERT_FILE") };
    });
}
