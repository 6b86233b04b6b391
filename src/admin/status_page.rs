//! The admin listener's `/`: one self-contained HTML page (no script, no outside request) with
//! the routes, uptime, request rate, cache hit ratio, the validity of the URLs handed out now,
//! and the last reload.

use std::fmt::Write as _;
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::Admin;
use crate::health::Readiness;
use crate::metrics::ReloadOutcome;
use crate::reload::ReloadRecord;

/// Renders the page from what `admin` reads now; remembers this view for the next one's
/// "recent" rate.
pub fn render(admin: &Admin) -> String {
    let now = Instant::now();
    let uptime = admin.metrics.uptime();
    let total: u64 = admin
        .metrics
        .routes()
        .iter()
        .map(|route| route.requests.total())
        .sum::<u64>()
        + admin.metrics.unrouted().total();
    let recent = {
        let mut last = admin
            .last_view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let since = last.replace((now, total));
        since.map(|(then, count)| rate(total.saturating_sub(count), now - then))
    };
    let (hits, lookups) = admin
        .metrics
        .routes()
        .iter()
        .map(|route| route.signing.cache.lookups())
        .fold((0, 0), |(h, l), (rh, rl)| (h + rh, l + rl));
    let refused: u64 = admin
        .metrics
        .routes()
        .iter()
        .map(|route| route.upstream.forbidden.get())
        .sum();

    let mut page = String::with_capacity(4096);
    page.push_str(HEAD);
    let _ = write!(
        page,
        "<h1>signgate</h1>\n<table class=\"facts\">\n\
         <tr><th>state</th><td>{state}</td></tr>\n\
         <tr><th>uptime</th><td>{uptime}</td></tr>\n\
         <tr><th>requests</th><td>{total}</td></tr>\n\
         <tr><th>request rate</th><td>{average:.2}/s since start{recent}</td></tr>\n\
         <tr><th>open connections</th><td>{open}</td></tr>\n\
         <tr><th>signature cache hit ratio</th><td>{ratio}</td></tr>\n\
         <tr><th>upstream 403s</th><td>{refused}</td></tr>\n\
         <tr><th>last reload</th><td>{reload}</td></tr>\n\
         </table>\n",
        state = state(admin),
        uptime = humantime::format_duration(Duration::from_secs(uptime.as_secs())),
        average = rate(total, uptime),
        recent = recent.map_or_else(String::new, |r| format!(", {r:.2}/s since the last view")),
        open = admin.metrics.open_connections(),
        ratio = ratio(hits, lookups),
        reload = last_reload(admin.last_reload()),
    );
    page.push_str(
        "<h2>Routes</h2>\n<table>\n<tr><th>name</th><th>mode</th><th>prefix</th>\
         <th>requests</th><th>5xx</th><th>upstream 403s</th><th>cache hit ratio</th>\
         <th>signed</th><th>URLs handed out now are valid for</th></tr>\n",
    );
    let unix_now = admin.clock.now_unix();
    for summary in admin.routes.load().iter() {
        let Some(route) = admin.metrics.route(&summary.name) else {
            continue;
        };
        let (hits, lookups) = route.signing.cache.lookups();
        let validity = summary.signing.expiry_at(unix_now).saturating_sub(unix_now);
        let _ = writeln!(
            page,
            "<tr><td>{name}</td><td>{mode}</td><td><code>{prefix}</code></td>\
             <td>{requests}</td><td>{errors}</td><td>{refused}</td><td>{ratio}</td>\
             <td>{minted}</td><td>{validity}</td></tr>",
            name = escape(&summary.name),
            mode = summary.mode.as_str(),
            prefix = escape(&summary.prefix),
            requests = route.requests.total(),
            errors = route.requests.server_errors(),
            refused = route.upstream.forbidden.get(),
            ratio = ratio(hits, lookups),
            minted = route.signing.minted.get(),
            validity = humantime::format_duration(Duration::from_secs(validity)),
        );
    }
    page.push_str("</table>\n");
    canaries(&mut page, admin);
    page.push_str(
        "<p>Machine-readable: <a href=\"/metrics\">/metrics</a> (Prometheus), \
         <a href=\"/healthz\">/healthz</a>, <a href=\"/readyz\">/readyz</a>.</p>\n\
         </body>\n</html>\n",
    );
    page
}

const HEAD: &str = "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
<title>signgate status</title>\n<style>\n\
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }\n\
table { border-collapse: collapse; margin-bottom: 1.5em; }\n\
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; }\n\
table.facts th { background: #f4f4f4; }\n\
</style>\n</head>\n<body>\n";

/// The readiness `/readyz` answers with.
fn state(admin: &Admin) -> String {
    let readiness = admin.health.readiness();
    match admin.health.canaries().refused_gate() {
        Some(route) if readiness == Readiness::Ready => format!(
            "not ready: the CDN refuses the canary of route {}",
            escape(&route)
        ),
        _ => readiness.as_str().to_owned(),
    }
}

/// The canaries' table, when a route has one.
fn canaries(page: &mut String, admin: &Admin) {
    let states = admin.health.canaries().states();
    if states.is_empty() {
        return;
    }
    page.push_str(
        "<h2>CDN canaries</h2>\n<table>\n<tr><th>route</th><th>handle</th>\
         <th>last check</th><th>outcome</th><th>gates readiness</th></tr>\n",
    );
    for state in states {
        let (at, outcome) = match state.last {
            None => ("not yet".to_owned(), "-".to_owned()),
            Some(check) => (
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(check.at))
                    .to_string(),
                match check.status {
                    Some(status) => format!("{} ({})", check.outcome.as_str(), status.as_u16()),
                    None => check.outcome.as_str().to_owned(),
                },
            ),
        };
        let _ = writeln!(
            page,
            "<tr><td>{route}</td><td><code>{handle}</code></td><td>{at}</td><td>{outcome}</td>\
             <td>{gates}</td></tr>",
            route = escape(&state.route),
            handle = state.handle,
            gates = if state.gates_readiness { "yes" } else { "no" },
        );
    }
    page.push_str("</table>\n");
}

/// "never", or the time (UTC) and the outcome of the last reload.
fn last_reload(record: Option<ReloadRecord>) -> String {
    match record {
        None => "never".to_owned(),
        Some(record) => {
            let at = UNIX_EPOCH + Duration::from_secs(record.at);
            let outcome = match record.outcome {
                ReloadOutcome::Success => "success",
                ReloadOutcome::Failure => "failure: refused, the old config serves (see the log)",
            };
            format!("{}, {outcome}", humantime::format_rfc3339_seconds(at))
        }
    }
}

/// Events per second over `elapsed`.
#[allow(clippy::cast_precision_loss, reason = "a rate shown with two decimals")]
fn rate(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// `hits` of `lookups` as a percentage, or a dash before the first lookup.
#[allow(
    clippy::cast_precision_loss,
    reason = "a percentage shown with one decimal"
)]
fn ratio(hits: u64, lookups: u64) -> String {
    if lookups == 0 {
        "-".to_owned()
    } else {
        format!(
            "{:.1} % ({hits} of {lookups})",
            hits as f64 * 100.0 / lookups as f64
        )
    }
}

/// `text` safe inside HTML element content.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_rates_and_names_read_plainly() {
        assert_eq!(ratio(0, 0), "-");
        assert_eq!(ratio(3, 4), "75.0 % (3 of 4)");
        assert!((rate(10, Duration::from_secs(4)) - 2.5).abs() < 1e-9);
        assert_eq!(rate(10, Duration::ZERO), 0.0);
        assert_eq!(escape("<a href='x'>&"), "&lt;a href=&#39;x&#39;&gt;&amp;");
    }

    #[test]
    fn the_last_reload_reads_as_time_and_outcome() {
        assert_eq!(last_reload(None), "never");
        let record = ReloadRecord {
            at: 1_800_000_000,
            outcome: ReloadOutcome::Success,
        };
        assert_eq!(last_reload(Some(record)), "2027-01-15T08:00:00Z, success");
    }
}
