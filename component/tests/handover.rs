//! Restarts without a gap and the SQLite instance lock, through the `nudge`
//! binary against the fake XMPP server: `run --replace` connects before the
//! old process closes its stream, SIGHUP starts a successor that tells
//! systemd it is the main process, and a second instance on one SQLite file
//! is refused.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{FakeServer, STEP, ServerConn, answer_kind};
use tokio::process::{Child, Command};

/// `nudge run` (plus `extra` arguments) on the example config, against the
/// fake server, with its SQLite database in `data`.
fn nudge_run(server: &FakeServer, data: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nudge"));
    for (k, _) in std::env::vars() {
        if k.starts_with("NUDGE_") || k == "NOTIFY_SOCKET" {
            c.env_remove(k);
        }
    }
    c.args(["--config", &common::example_config(), "run"])
        .args(extra)
        .env("NUDGE_COMPONENT__PORT", server.port.to_string())
        .env("NUDGE_COMPONENT__SECRET", common::SECRET)
        .env("NUDGE_STORAGE__DATA_DIR", data)
        .env("NUDGE_HTTP__LISTEN", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

async fn ping(conn: &mut ServerConn, id: &str) -> String {
    let a = conn
        .request(&format!(
            "<iq id='{id}' type='get' from='localhost' to='push.localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await;
    answer_kind(&a).0
}

async fn exits(child: &mut Child) -> std::process::ExitStatus {
    tokio::time::timeout(STEP, child.wait())
        .await
        .expect("process exited in time")
        .unwrap()
}

async fn stderr_of(child: &mut Child) -> String {
    use tokio::io::AsyncReadExt;
    let mut text = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = tokio::time::timeout(STEP, err.read_to_string(&mut text)).await;
    }
    text
}

fn lock_holder(data: &Path) -> Option<u32> {
    std::fs::read_to_string(data.join("nudge.db.lock"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn signal(pid: u32, sig: &str) {
    assert!(
        std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

#[tokio::test]
async fn a_second_instance_on_one_sqlite_file_is_refused() {
    let server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut first = nudge_run(&server, dir.path(), &[]).spawn().unwrap();
    let mut conn = server.accept().await;
    assert_eq!(ping(&mut conn, "p1").await, "result");
    let first_pid = first.id().unwrap();

    let mut second = nudge_run(&server, dir.path(), &[]).spawn().unwrap();
    let status = exits(&mut second).await;
    let err = stderr_of(&mut second).await;
    assert_eq!(status.code(), Some(3), "{err}");
    assert!(err.contains("another Nudge instance"), "{err}");
    assert!(err.contains(&format!("PID {first_pid}")), "{err}");
    assert!(err.contains("PostgreSQL"), "{err}");
    // It never connected, and the first one is undisturbed.
    assert!(
        server
            .try_accept_tcp(Duration::from_millis(300))
            .await
            .is_none(),
        "the refused instance connected"
    );
    assert_eq!(ping(&mut conn, "p2").await, "result");

    signal(first_pid, "-TERM");
    assert_eq!(conn.expect_close().await, None);
    assert!(exits(&mut first).await.success());
}

#[tokio::test]
async fn replace_connects_first_then_the_old_one_answers_and_exits() {
    let server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut old = nudge_run(&server, dir.path(), &[]).spawn().unwrap();
    let mut old_conn = server.accept().await;
    assert_eq!(ping(&mut old_conn, "before").await, "result");
    let old_pid = old.id().unwrap();
    assert_eq!(lock_holder(dir.path()), Some(old_pid));

    // Without a PID, the one in the lock file is replaced.
    let mut new = nudge_run(&server, dir.path(), &["--replace"])
        .spawn()
        .unwrap();
    let mut new_conn = server.accept().await;
    // Both connected at once: the old one still answers on its stream.
    // (It is asked to stop once the new one's handshake is through, so
    // this may already be answered while draining: answered either way.)
    old_conn
        .send("<iq id='during' type='get' from='localhost' to='push.localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(ping(&mut new_conn, "new").await, "result");
    let answered = old_conn.try_recv(STEP).await.expect("old one answered");
    assert_eq!(answered.get_attr("id"), Some("during"));
    assert_eq!(answer_kind(&answered).0, "result");
    assert_eq!(old_conn.expect_close().await, None);
    assert!(exits(&mut old).await.success());

    // The new one holds the lock now, and a third is refused.
    let new_pid = new.id().unwrap();
    assert!(
        common::eventually(|| async { lock_holder(dir.path()) == Some(new_pid) }).await,
        "lock taken over"
    );
    let mut third = nudge_run(&server, dir.path(), &[]).spawn().unwrap();
    assert_eq!(exits(&mut third).await.code(), Some(3));
    assert_eq!(ping(&mut new_conn, "after").await, "result");

    signal(new_pid, "-TERM");
    assert_eq!(new_conn.expect_close().await, None);
    assert!(exits(&mut new).await.success());
}

#[tokio::test]
async fn a_replacement_that_cannot_connect_leaves_the_old_one_running() {
    let server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The replacement gives up after 15 s; no self-ping meanwhile.
    let mut old = nudge_run(&server, dir.path(), &[])
        .env("NUDGE_COMPONENT__READ_IDLE_SECS", "120")
        .spawn()
        .unwrap();
    let mut old_conn = server.accept().await;
    let old_pid = old.id().unwrap();
    // The new one is pointed at a port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = closed.local_addr().unwrap().port();
    drop(closed);
    let mut new = nudge_run(&server, dir.path(), &["--replace", &old_pid.to_string()])
        .env("NUDGE_COMPONENT__PORT", nowhere.to_string())
        .spawn()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), new.wait())
        .await
        .expect("gave up in time")
        .unwrap();
    let err = stderr_of(&mut new).await;
    assert!(!status.success(), "{err}");
    assert!(err.contains("handover aborted"), "{err}");
    assert_eq!(ping(&mut old_conn, "still").await, "result");
    assert_eq!(lock_holder(dir.path()), Some(old_pid));
    signal(old_pid, "-TERM");
    assert!(exits(&mut old).await.success());
}

#[tokio::test]
async fn sighup_starts_a_successor_that_becomes_systemds_main_process() {
    let server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&socket_path).unwrap();
    notify.set_nonblocking(true).unwrap();
    let mut old = nudge_run(&server, dir.path(), &[])
        .env("NOTIFY_SOCKET", &socket_path)
        .spawn()
        .unwrap();
    let mut old_conn = server.accept().await;
    assert_eq!(ping(&mut old_conn, "before").await, "result");
    let old_pid = old.id().unwrap();
    // READY=1 from the first instance.
    assert!(
        common::eventually(|| async { !received(&notify).is_empty() }).await,
        "READY from the first instance"
    );

    signal(old_pid, "-HUP");
    let mut new_conn = server.accept().await;
    assert_eq!(old_conn.expect_close().await, None);
    assert!(exits(&mut old).await.success());
    assert_eq!(ping(&mut new_conn, "after").await, "result");

    // The successor told systemd it is the main process now.
    let mut messages = String::new();
    assert!(
        common::eventually(|| {
            messages.push_str(&received(&notify));
            let found = messages.contains("MAINPID=");
            async move { found }
        })
        .await,
        "MAINPID from the successor: {messages:?}"
    );
    let new_pid: u32 = messages
        .lines()
        .find_map(|l| l.strip_prefix("MAINPID="))
        .and_then(|p| p.parse().ok())
        .expect("a PID");
    assert_ne!(new_pid, old_pid);
    assert!(messages.contains("READY=1"), "{messages:?}");
    // Both say so: the successor once it has stopped the old one, and the
    // old one as it exits (with kick_old it may exit before the successor's
    // message reaches systemd, `deploy/nudge.service`).
    let main_pids = |m: &str| {
        m.lines()
            .filter_map(|l| l.strip_prefix("MAINPID="))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert!(
        common::eventually(|| {
            messages.push_str(&received(&notify));
            let both = main_pids(&messages).len() >= 2;
            async move { both }
        })
        .await,
        "MAINPID from the old instance too: {messages:?}"
    );
    assert!(
        main_pids(&messages)
            .iter()
            .all(|p| *p == new_pid.to_string()),
        "{messages:?}"
    );
    assert!(
        common::eventually(|| async { lock_holder(dir.path()) == Some(new_pid) }).await,
        "the successor holds the lock"
    );
    signal(new_pid, "-TERM");
    assert_eq!(new_conn.expect_close().await, None);
}

/// Every datagram waiting on the notify socket.
fn received(socket: &UnixDatagram) -> String {
    let mut all = String::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = socket.recv(&mut buf) {
        all.push_str(&String::from_utf8_lossy(&buf[..n]));
        all.push('\n');
    }
    all
}

/// SQLite cannot notify a running instance, so `nudge registrations remove`
/// tells it (SIGUSR1) to forget its cache: the next publish for the node is
/// answered `item-not-found` at once, not after the cache entry's age.
#[tokio::test]
async fn registrations_remove_reaches_the_running_sqlite_instance() {
    let server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut running = nudge_run(&server, dir.path(), &[]).spawn().unwrap();
    let mut conn = server.accept().await;
    assert_eq!(ping(&mut conn, "up").await, "result");
    let url = format!("sqlite://{}/nudge.db", dir.path().display());
    let store = nudge::store::RegistrationStore::open(&url, 10)
        .await
        .unwrap();
    let reg = store
        .register(&nudge::store::NewRegistration {
            with_secret: false,
            ..common::registration("juliet@capulet.lit", "not-configured", "phone", "tok")
        })
        .await
        .unwrap();
    store.close().await;
    // Known (and now cached); its app has no backend here: `wait`.
    let publish = |id: &str| common::publish_iq(id, "capulet.lit", &reg.node, None, "hi");
    let first = answer_kind(&conn.request(&publish("p1")).await);
    assert_eq!(first.0, "wait", "{first:?}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nudge"))
        .args([
            "--config",
            &common::example_config(),
            "registrations",
            "remove",
            &reg.node,
        ])
        .env("NUDGE_STORAGE__DATA_DIR", dir.path())
        .env_remove("NUDGE_STORAGE__URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut gone = false;
    for i in 0..20 {
        let answer = conn.request(&publish(&format!("p{}", i + 2))).await;
        if answer_kind(&answer).0 == "cancel" {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        gone,
        "the running instance still used its cached registration"
    );
    signal(running.id().unwrap(), "-TERM");
    assert!(exits(&mut running).await.success());
}
