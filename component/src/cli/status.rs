//! `nudge status`: asks the running instance at `[http] listen` for
//! `/status` (`component/src/http/status.rs`) and prints it for a person,
//! or as it came with `--json`. When nothing answers it says so, prints
//! what the database alone tells (the outbox, the brakes), and fails: a
//! script or a monitoring check can rely on the exit status.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use nudge::config::Config;
use nudge::http::status::{BrakeStatus, OutboxStatus, Status, database_view};
use nudge::store::{RegistrationStore, now};

use super::human_secs;
use crate::BoxError;

/// How long the running instance gets to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// Runs `nudge status`.
pub async fn run(config: &Config, json: bool) -> Result<(), BoxError> {
    let url = status_url(config.http.listen);
    let unreachable = if config.http.enabled {
        match fetch(&url).await {
            Ok(body) => return print_answer(&body, json),
            Err(e) => format!(
                "no running instance answered at {url}: {e}\n\
                 (is `nudge run` running with this configuration? is [http] enabled and \
                 [http] listen = {} what it listens on?)",
                config.http.listen
            ),
        }
    } else {
        "[http] enabled = false in this configuration: a running instance cannot be asked"
            .to_owned()
    };
    eprintln!("nudge: {unreachable}");
    println!("From the database alone:");
    match open_store(config).await {
        Ok(store) => match database_view(&store).await {
            Ok((outbox, brakes)) => {
                println!("{}", outbox_line(&outbox));
                print_brakes(&brakes);
            }
            Err(e) => println!("database     not readable: {e}"),
        },
        Err(e) => println!("database     not reachable: {e}"),
    }
    Err("the running instance did not answer".into())
}

/// Where the instance listening on `listen` is reached from this machine.
fn status_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/status", SocketAddr::new(ip, listen.port()))
}

async fn fetch(url: &str) -> Result<String, BoxError> {
    let client = nudge::http::status::plain_client(ANSWER_WITHIN)?;
    let answer = client.get(url).send().await.map_err(|e| {
        // reqwest's own text is "error sending request"; the cause says why.
        let mut why = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            why = format!("{why}: {s}");
            source = s.source();
        }
        why
    })?;
    if !answer.status().is_success() {
        return Err(format!("HTTP {}", answer.status()).into());
    }
    Ok(answer.text().await?)
}

async fn open_store(config: &Config) -> Result<RegistrationStore, BoxError> {
    let store = RegistrationStore::open(&config.database_url(), 16).await?;
    store.migrate().await?;
    Ok(store)
}

fn print_answer(body: &str, json: bool) -> Result<(), BoxError> {
    if json {
        println!("{body}");
        return Ok(());
    }
    let status: Status = serde_json::from_str(body)
        .map_err(|e| format!("the instance's /status is not what this nudge reads: {e}"))?;
    print!("{}", render(&status, now()));
    Ok(())
}

/// The status as a person reads it, as of unix second `now`.
pub fn render(s: &Status, now: i64) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "nudge {} (PID {}), component {}",
        s.version, s.pid, s.domain
    );
    let link = &s.link;
    let _ = match link.connected_since {
        Some(t) => writeln!(
            out,
            "link         {} for {}, {} reconnects",
            link.state,
            human_secs(now - t),
            link.reconnects
        ),
        None => writeln!(
            out,
            "link         {} for {}, {} reconnects",
            link.state,
            human_secs(now - link.since),
            link.reconnects
        ),
    };
    let _ = match &s.database.error {
        None => writeln!(out, "database     {}, answering", s.database.kind),
        Some(e) => writeln!(out, "database     {}, NOT answering: {e}", s.database.kind),
    };
    if let Some(outbox) = &s.outbox {
        let _ = writeln!(out, "{}", outbox_line(outbox));
    }
    let d = &s.dispatch;
    let _ = writeln!(
        out,
        "dispatch     {} delivered, {} queued, {} retries, {} rejected, {} tokens removed, \
         {} removals held, {} coalesced, {} rate-limited, {} expired",
        d.delivered,
        d.queued,
        d.retries,
        d.rejected,
        d.removed,
        d.held,
        d.coalesced,
        d.limited,
        d.expired
    );
    for (app, r) in &s.apps {
        let success = match r.last_success_at {
            Some(t) => format!("last success {} ago", human_secs(now - t)),
            None => "no success yet".to_owned(),
        };
        let error = match (r.last_error_at, &r.last_error) {
            (Some(t), Some(why)) => format!("last error {} ago: {why}", human_secs(now - t)),
            _ => "no error".to_owned(),
        };
        let _ = writeln!(
            out,
            "app {app:<8} {success}; {error} ({} delivered, {} failed since start)",
            r.delivered, r.failed
        );
    }
    if let Some(brakes) = &s.brakes {
        out.push_str(&brakes_text(brakes));
    }
    out
}

fn outbox_line(outbox: &OutboxStatus) -> String {
    match outbox.oldest_age_secs {
        Some(age) if outbox.queued > 0 => format!(
            "outbox       {} pushes queued, the oldest accepted {} ago",
            outbox.queued,
            human_secs(age)
        ),
        _ => "outbox       empty".to_owned(),
    }
}

fn print_brakes(brakes: &[BrakeStatus]) {
    print!("{}", brakes_text(brakes));
}

fn brakes_text(brakes: &[BrakeStatus]) -> String {
    if brakes.is_empty() {
        return "brake        never engaged\n".to_owned();
    }
    brakes
        .iter()
        .map(|b| {
            let state = if b.engaged {
                "ENGAGED (release: nudge brake release APP [--apply])"
            } else {
                "released"
            };
            format!(
                "brake {:<7} {state}, engaged at {}, {} removals held\n",
                b.app, b.engaged_at, b.held
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_listen_address_is_asked_on_loopback() {
        assert_eq!(
            status_url("0.0.0.0:9357".parse().unwrap()),
            "http://127.0.0.1:9357/status"
        );
        assert_eq!(
            status_url("[::]:9357".parse().unwrap()),
            "http://[::1]:9357/status"
        );
        assert_eq!(
            status_url("10.0.0.2:80".parse().unwrap()),
            "http://10.0.0.2:80/status"
        );
    }
}
