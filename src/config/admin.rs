//! `[admin]`: the admin listener's address, checked against the traffic listener's.

use std::net::SocketAddr;

use super::raw::RawAdmin;
use super::{ConfigError, invalid};

/// `[admin]`: the listener for `/healthz`, `/readyz`, `/metrics` and the status page, apart
/// from traffic. Off unless `listen` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// `listen`: the address to bind, such as `127.0.0.1:9090`. Keep it off the public
    /// interface: the status page names the routes.
    pub listen: SocketAddr,
}

/// The typed `[admin]` table: `None` when the table or its `listen` is absent.
pub(super) fn build_admin(
    raw: Option<&RawAdmin>,
    server_listen: SocketAddr,
) -> Result<Option<AdminConfig>, ConfigError> {
    let Some(text) = raw.and_then(|admin| admin.listen.as_deref()) else {
        return Ok(None);
    };
    let listen = parse_listen(text)?;
    if overlaps(listen, server_listen) {
        return Err(invalid(
            "`admin.listen`",
            format!(
                "{listen} is the traffic listener's address (`server.listen` = {server_listen}): \
                 give the admin listener a port of its own"
            ),
        ));
    }
    Ok(Some(AdminConfig { listen }))
}

/// `admin.listen`'s text as an address; also read on its own by `signgate health`, which must
/// find the listener even when the rest of the file would be refused.
pub fn parse_listen(text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        invalid(
            "`admin.listen`",
            format!("must be an address such as \"127.0.0.1:9090\", got {text:?}"),
        )
    })
}

/// Whether binding both addresses would collide: the same fixed port on the same address, or
/// on any address when either is a wildcard. Port 0 (any free port) never collides.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(listen: &str, server: &str) -> Result<Option<AdminConfig>, ConfigError> {
        let raw = RawAdmin {
            listen: Some(listen.to_owned()),
        };
        build_admin(Some(&raw), server.parse().expect("addr"))
    }

    #[test]
    fn off_unless_listen_is_set() {
        let server = "127.0.0.1:8080".parse().expect("addr");
        assert_eq!(build_admin(None, server).expect("valid"), None);
        let empty = RawAdmin::default();
        assert_eq!(build_admin(Some(&empty), server).expect("valid"), None);
    }

    #[test]
    fn a_bad_or_shared_address_is_refused_by_name() {
        let bad = build("localhost:9090", "127.0.0.1:8080")
            .expect_err("not an address")
            .to_string();
        assert!(
            bad.contains("`admin.listen`") && bad.contains("localhost:9090"),
            "{bad}"
        );
        for (admin, server) in [
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("127.0.0.1:8080", "[::]:8080"),
        ] {
            let shared = build(admin, server).expect_err("same port").to_string();
            assert!(
                shared.contains("`admin.listen`") && shared.contains("server.listen"),
                "{shared}"
            );
        }
        for (admin, server) in [
            ("127.0.0.1:9090", "127.0.0.1:8080"),
            ("127.0.0.2:8080", "127.0.0.1:8080"),
            ("127.0.0.1:0", "127.0.0.1:0"),
        ] {
            assert!(build(admin, server).expect("valid").is_some(), "{admin}");
        }
    }
}
