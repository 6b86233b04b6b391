//! The open-file limit: raised at start to what the connection limits can need, as far as the
//! hard limit allows, with a warning when that is not enough.
//!
//! Distributions start services with a soft limit of 1,024 descriptors and a far higher hard
//! limit; without raising it, the default `max_connections` would run into `EMFILE` long before
//! its own limit.

use crate::config::Config;

/// Descriptors set aside for log and config files and trust roots.
const RESERVED: u64 = 64;
/// Descriptors each worker holds besides connections: its listener, epoll and wake-up fds.
const PER_WORKER: u64 = 8;

/// The open-file limit in force, and what the configured connection limits can need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// The soft limit after raising.
    pub limit: u64,
    /// For every worker: `max_connections` client connections and, for each fetching route,
    /// `max_upstream_connections` busy and `upstream_keepalive` idle; plus a reserve.
    pub needed: u64,
}

impl FdBudget {
    /// What `config` can need: per worker, every client connection it accepts and every
    /// upstream connection its fetching routes may hold: up to `max_upstream_connections` busy
    /// and `upstream_keepalive` idle.
    pub fn needed_for(config: &Config) -> u64 {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let upstream: u64 = config
            .routes
            .iter()
            .filter_map(|route| route.fetch())
            .map(|fetch| count(fetch.max_connections.get()).saturating_add(count(fetch.keepalive)))
            .fold(0, u64::saturating_add);
        count(config.server.max_connections.get())
            .saturating_add(upstream)
            .saturating_add(PER_WORKER)
            .saturating_mul(count(config.server.workers.get()))
            .saturating_add(RESERVED)
    }

    /// Raises the soft limit towards what `config` can need (never past the hard limit).
    pub fn raise_for(config: &Config) -> std::io::Result<Self> {
        let needed = Self::needed_for(config);
        let limit = rlimit::increase_nofile_limit(needed)?;
        Ok(Self { limit, needed })
    }

    /// A warning naming the keys to change, when the limit is below what the config can need.
    pub fn warning(&self) -> Option<String> {
        (self.limit < self.needed).then(|| {
            format!(
                "the open-file limit is {} but `server.max_connections` and the routes' \
                 `max_upstream_connections`, per worker, can need {} descriptors; past the limit, \
                 connections fail. Raise the hard limit (`ulimit -Hn`, systemd \
                 `LimitNOFILE=`) or lower those keys",
                self.limit, self.needed
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Config {
        let toml = format!(
            "{toml}\n[signing]\nsecret_env = \"S\"\n\
             [[route]]\nname = \"img\"\nprefix = \"/img/\"\nmode = \"proxy\"\n\
             upstream = \"https://cdn.example\"\nmax_upstream_connections = 300\n\
             [[route]]\nname = \"site\"\nprefix = \"/\"\nmode = \"site\"\n\
             upstream = \"http://127.0.0.1:3000\"\n\
             [[route]]\nname = \"go\"\nprefix = \"/go/\"\nmode = \"redirect\"\n\
             upstream = \"https://cdn.example\"\n"
        );
        Config::from_toml_str(&toml, |_| Some("secret".into())).expect("valid config")
    }

    #[test]
    fn needs_every_client_and_upstream_connection_of_every_worker_plus_a_reserve() {
        // Proxy 300 busy + site 1024 (the default), each with 32 idle (the default keep-alive);
        // the redirect route never fetches.
        let config = config("[server]\nmax_connections = 1000\nworkers = 2");
        assert_eq!(
            FdBudget::needed_for(&config),
            2 * (1000 + (300 + 32) + (1024 + 32) + PER_WORKER) + RESERVED
        );
    }

    #[test]
    fn warns_only_below_the_need_and_names_the_keys() {
        let enough = FdBudget {
            limit: 5000,
            needed: 4064,
        };
        assert_eq!(enough.warning(), None);
        let short = FdBudget {
            limit: 1024,
            needed: 4064,
        };
        let warning = short.warning().expect("a warning");
        assert!(
            warning.contains("1024") && warning.contains("4064"),
            "{warning}"
        );
        assert!(
            warning.contains("server.max_connections")
                && warning.contains("max_upstream_connections"),
            "{warning}"
        );
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let before = rlimit::Resource::NOFILE.get().expect("getrlimit").0;
        let config = config("[server]\nmax_connections = 1\nworkers = 1");
        let budget = FdBudget::raise_for(&config).expect("raise");
        assert!(budget.limit >= before.min(budget.needed));
        assert!(rlimit::Resource::NOFILE.get().expect("getrlimit").0 >= before);
    }
}
