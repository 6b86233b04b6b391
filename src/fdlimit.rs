//! The open-file limit: raised at start to what the connection limits can need, as far as the
//! hard limit allows, with a warning when that is not enough.
//!
//! Distributions start services with a soft limit of 1,024 descriptors and a far higher hard
//! limit; without raising it, the default `max_connections` would run into `EMFILE` long before
//! its own limit.

use crate::config::ServerConfig;

/// Descriptors set aside for listeners, log and config files, trust roots and the runtime.
const RESERVED: u64 = 64;

/// The open-file limit in force, and what the configured connection limits can need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// The soft limit after raising.
    pub limit: u64,
    /// Two descriptors per allowed client connection (it may hold an upstream connection while
    /// it streams), for every worker, plus a reserve.
    pub needed: u64,
}

impl FdBudget {
    /// What `server` can need: `max_connections` per worker, each with its upstream connection.
    pub fn needed_for(server: &ServerConfig) -> u64 {
        let connections = u64::try_from(server.max_connections.get()).unwrap_or(u64::MAX);
        let workers = u64::try_from(server.workers.get()).unwrap_or(u64::MAX);
        connections
            .saturating_mul(workers)
            .saturating_mul(2)
            .saturating_add(RESERVED)
    }

    /// Raises the soft limit towards what `server` can need (never past the hard limit).
    pub fn raise_for(server: &ServerConfig) -> std::io::Result<Self> {
        let needed = Self::needed_for(server);
        let limit = rlimit::increase_nofile_limit(needed)?;
        Ok(Self { limit, needed })
    }

    /// A warning naming the keys to change, when the limit is below what the config can need.
    pub fn warning(&self) -> Option<String> {
        (self.limit < self.needed).then(|| {
            format!(
                "the open-file limit is {} but `server.max_connections` × `server.workers` can \
                 need {} descriptors; connections past the limit wait in the backlog. Raise the \
                 hard limit (`ulimit -Hn`, systemd `LimitNOFILE=`) or lower \
                 `server.max_connections`",
                self.limit, self.needed
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn server(toml: &str) -> ServerConfig {
        let toml = format!(
            "{toml}\n[signing]\nsecret_env = \"S\"\n[[route]]\nname = \"r\"\nprefix = \"/r/\"\n\
             mode = \"redirect\"\nupstream = \"https://cdn.example\"\n"
        );
        Config::from_toml_str(&toml, |_| Some("secret".into()))
            .expect("valid config")
            .server
    }

    #[test]
    fn needs_two_descriptors_per_connection_per_worker_plus_a_reserve() {
        let server = server("[server]\nmax_connections = 1000\nworkers = 2");
        assert_eq!(FdBudget::needed_for(&server), 4000 + RESERVED);
    }

    #[test]
    fn warns_only_below_the_need_and_names_the_key() {
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
        assert!(warning.contains("server.max_connections"), "{warning}");
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let before = rlimit::Resource::NOFILE.get().expect("getrlimit").0;
        let server = server("[server]\nmax_connections = 1\nworkers = 1");
        let budget = FdBudget::raise_for(&server).expect("raise");
        assert!(budget.limit >= before.min(budget.needed));
        assert!(rlimit::Resource::NOFILE.get().expect("getrlimit").0 >= before);
    }
}
