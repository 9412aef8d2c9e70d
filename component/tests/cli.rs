//! The `nudge` binary: configuration errors name the key, environment
//! overrides work, and the registration commands operate on the store.

mod common;

use std::process::Command;

use nudge::store::{HeldRemoval, RegistrationStore};

fn nudge() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nudge"));
    // Keep the caller's NUDGE_* variables out of these tests.
    for (k, _) in std::env::vars() {
        if k.starts_with("NUDGE_") {
            c.env_remove(k);
        }
    }
    c
}

/// `nudge vapid generate` needs no configuration (the config path given
/// does not exist) and prints a key pair that a Web Push app takes, whose
/// public half is what that app hands out.
#[test]
fn vapid_generate_prints_a_key_pair_a_webpush_app_takes() {
    let dir = tempfile::tempdir().unwrap();
    let out = nudge()
        .args(["--config", "/nonexistent/nudge.toml", "vapid", "generate"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let private = stdout
        .lines()
        .find_map(|l| l.strip_prefix("vapid_private_key = \"")?.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no private key line in {stdout}"));
    let public = stdout
        .lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .unwrap_or_else(|| panic!("no public key line in {stdout}"));
    // A second run gives another pair.
    let again = nudge().args(["vapid", "generate"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&again.stdout).contains(private));

    let config = dir.path().join("nudge.toml");
    std::fs::write(
        &config,
        format!(
            "[component]\ndomain = 'push.localhost'\nsecret = 's'\n\
             [apps.web]\nprovider = 'webpush'\nvapid_private_key = '{private}'\n\
             vapid_subject = 'mailto:ops@example.org'\n"
        ),
    )
    .unwrap();
    let out = nudge()
        .args(["--config", config.to_str().unwrap(), "check-config"])
        .env("NUDGE_STORAGE__DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let backend = nudge_plugins::webpush::WebPushBackend::new(
        "web",
        &toml::from_str(&format!(
            "vapid_private_key = '{private}'\nvapid_subject = 'mailto:ops@example.org'"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(backend.vapid_public_key(), public);
}

#[test]
fn the_example_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let out = nudge()
        .args(["--config", &common::example_config(), "check-config"])
        .env("NUDGE_STORAGE__DATA_DIR", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("configuration OK: component push.localhost via 127.0.0.1:5347"),
        "{stdout}"
    );
}

#[test]
fn environment_overrides_the_file_and_errors_name_the_key() {
    let out = nudge()
        .args(["--config", &common::example_config(), "check-config"])
        .env("NUDGE_COMPONENT__PORT", "15347")
        .env("NUDGE_COMPONENT__DOMAIN", "push.example.org")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("push.example.org via 127.0.0.1:15347"),
        "{stdout}"
    );

    // NUDGE_CONFIG names the file; it and other non-section NUDGE_ variables
    // are not configuration keys.
    let out = nudge()
        .arg("check-config")
        .env("NUDGE_CONFIG", common::example_config())
        .env("NUDGE_SOMETHING_ELSE", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = nudge()
        .args(["--config", &common::example_config(), "check-config"])
        .env("NUDGE_COMPONENT__PORT", "not-a-port")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("component.port"), "{stderr}");

    let out = nudge()
        .args(["--config", "/nonexistent/nudge.toml", "check-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/nudge.toml"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[component]\ndomain = 'push.localhost'\nsecret = 'x'\n[apps.x]\nprovider = 'carrier-pigeon'\n").unwrap();
    let out = nudge()
        .args(["--config", bad.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("carrier-pigeon"), "{stderr}");
}

#[tokio::test]
async fn registrations_can_be_listed_shown_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/nudge.db", dir.path().display());
    let out = nudge()
        .args(["--config", &common::example_config(), "migrate"])
        .env("NUDGE_STORAGE__URL", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = RegistrationStore::open(&url, 10).await.unwrap();
    let reg = store
        .register(&common::registration(
            "alice@localhost",
            "conversations",
            "dev1",
            "tok",
        ))
        .await
        .unwrap();
    store.close().await;

    let run = |args: &[&str]| {
        let mut full = vec![
            "--config",
            common::example_config().leak() as &str,
            "registrations",
        ];
        full.extend_from_slice(args);
        nudge()
            .args(full)
            .env("NUDGE_STORAGE__URL", &url)
            .output()
            .unwrap()
    };
    let list = run(&["list"]);
    let hash = nudge::store::node_hash(&reg.node);
    assert!(
        String::from_utf8_lossy(&list.stdout).contains(&format!("{hash}\t{}\t", reg.node)),
        "the hash column, then the node"
    );
    // The hash from a log line finds the registration.
    let by_hash = run(&["show", &hash]);
    let json: serde_json::Value = serde_json::from_slice(&by_hash.stdout).unwrap();
    assert_eq!(json["node"], reg.node.as_str());
    assert_eq!(json["node_hash"], hash.as_str());
    let show = run(&["show", &reg.node]);
    let json: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(json["owner"], "alice@localhost");
    assert_eq!(json["has_secret"], true);
    assert!(run(&["remove", &reg.node]).status.success());
    let again = run(&["show", &reg.node]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("no registration"));
    // Nodes are base64url: one in 64 begins with '-', which is no option.
    let dash = run(&["remove", "-Xy_9"]);
    assert!(
        String::from_utf8_lossy(&dash.stderr).contains("no registration with node -Xy_9"),
        "{}",
        String::from_utf8_lossy(&dash.stderr)
    );
}

/// The operator's side of the removal brake and the outbox.
#[tokio::test]
async fn brake_status_and_release_apply_held_removals() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/nudge.db", dir.path().display());
    let store = RegistrationStore::open(&url, 10).await.unwrap();
    store.migrate().await.unwrap();
    let mut nodes = Vec::new();
    for (device, token) in [("d1", "tok1"), ("d2", "tok2"), ("d3", "tok3")] {
        let reg = store
            .register(&common::registration(
                "alice@localhost",
                "ios",
                device,
                token,
            ))
            .await
            .unwrap();
        nodes.push(reg.node);
    }
    let brakes = store.brake();
    brakes.engage("ios", 100).await.unwrap();
    for (node, token) in [(&nodes[0], "tok1"), (&nodes[1], "tok2")] {
        brakes
            .hold(&HeldRemoval {
                node: node.clone(),
                app: "ios".into(),
                token: token.into(),
                reason: "BadDeviceToken".into(),
                held_at: 100,
            })
            .await
            .unwrap();
    }
    // A held device registered a new token meanwhile: not removed.
    store
        .register(&common::registration(
            "alice@localhost",
            "ios",
            "d2",
            "tok2-new",
        ))
        .await
        .unwrap();
    store
        .outbox()
        .merge(&nodes[2], &Default::default(), None, 1, 0, i64::MAX / 4)
        .await
        .unwrap();
    store.close().await;

    let run = |args: &[&str]| {
        let mut full = vec!["--config", common::example_config().leak() as &str];
        full.extend_from_slice(args);
        let out = nudge()
            .args(full)
            .env("NUDGE_STORAGE__URL", &url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let status = run(&["brake", "status"]);
    assert!(status.contains("ios\tengaged"), "{status}");
    assert!(status.contains("held=2"), "{status}");
    assert!(run(&["outbox", "status"]).contains("1 pushes queued"));
    let released = run(&["brake", "release", "ios", "--apply"]);
    assert!(
        released.contains("1 of 2 held removals applied"),
        "{released}"
    );
    assert!(run(&["brake", "status"]).contains("ios\treleased"));

    let store = RegistrationStore::open(&url, 10).await.unwrap();
    assert!(store.find(&nodes[0]).await.unwrap().is_none(), "applied");
    assert!(
        store.find(&nodes[1]).await.unwrap().is_some(),
        "new token kept"
    );
    assert!(store.brake().held(None).await.unwrap().is_empty());
    store.close().await;
}

#[tokio::test]
async fn run_connects_and_stops_cleanly_on_sigterm() {
    let server = common::FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_nudge"))
        .args(["--config", &common::example_config(), "run"])
        .env("NUDGE_HTTP__LISTEN", "127.0.0.1:0")
        .env("NUDGE_COMPONENT__PORT", server.port.to_string())
        .env("NUDGE_COMPONENT__SECRET", common::SECRET)
        .env("NUDGE_STORAGE__DATA_DIR", dir.path())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut conn = server.accept().await;
    let a = conn
        .request("<iq id='p' type='get' from='localhost' to='push.localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(common::answer_kind(&a).0, "result");
    assert!(
        dir.path().join("nudge.db").exists(),
        "SQLite created in the data dir"
    );
    let pid = child.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(conn.expect_close().await, None);
    let status = tokio::time::timeout(common::STEP, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}
