//! Where a secret comes from (`secret_env` or `secret_file`, never the config file), and what is
//! worth a warning about it.

use std::path::Path;

use super::raw::RawSigning;
use super::{ConfigError, invalid};
use crate::secret::{KeyMaterial, Secret};

/// Whether a secret that is not available here stops the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretsNeeded {
    /// Serving and signing: a missing variable or file is an error.
    Required,
    /// Checking a config somewhere its secrets are not (CI): a missing variable or file gives a
    /// [`Secret::placeholder`] and a warning. An empty one is still an error.
    Optional,
}

/// Reads the secret `raw` names. `at` is where the keys are: `"signing."` or
/// ``"route `images`: "``. Returns the secret and, when it is a placeholder, the warning.
pub(super) fn load_secret(
    raw: &RawSigning,
    env: &dyn Fn(&str) -> Option<String>,
    at: &str,
    needed: SecretsNeeded,
) -> Result<(Secret, Option<String>), ConfigError> {
    let source = SecretSource {
        var: raw.secret_env.as_deref(),
        file: raw.secret_file.as_deref(),
        keys: ("secret_env", "secret_file"),
    };
    source
        .load(env, at, needed)?
        .ok_or_else(|| invalid(key_at(at, "secret_env"), "no secret configured"))
}

/// Reads the next secret `raw` names (`secret_next_env` or `secret_next_file`), if it names
/// one; as [`load_secret`] otherwise.
pub(super) fn load_next_secret(
    raw: &RawSigning,
    env: &dyn Fn(&str) -> Option<String>,
    at: &str,
    needed: SecretsNeeded,
) -> Result<Option<(Secret, Option<String>)>, ConfigError> {
    let source = SecretSource {
        var: raw.secret_next_env.as_deref(),
        file: raw.secret_next_file.as_deref(),
        keys: ("secret_next_env", "secret_next_file"),
    };
    source.load(env, at, needed)
}

/// Reads the secret `raw` names as text, for a scheme that derives its own keys from it
/// ([`KeyMaterial`]); `None` when `raw` names none, or (with `needed` optional) when it is not
/// available here: the route's [`Secret`], read from the same keys, carries the warning.
pub(super) fn load_key_material(
    raw: &RawSigning,
    env: &dyn Fn(&str) -> Option<String>,
    at: &str,
    needed: SecretsNeeded,
) -> Result<Option<KeyMaterial>, ConfigError> {
    let source = SecretSource {
        var: raw.secret_env.as_deref(),
        file: raw.secret_file.as_deref(),
        keys: ("secret_env", "secret_file"),
    };
    Ok(match source.read(env, at, needed)? {
        Some(SecretText::Value(text)) => KeyMaterial::new(text).ok(),
        Some(SecretText::Missing(_)) | None => None,
    })
}

/// `key` where the keys are (`at`), as messages name it.
fn key_at(at: &str, key: &str) -> String {
    if at.ends_with('.') {
        format!("`{at}{key}`")
    } else {
        format!("{at}`{key}`")
    }
}

/// A secret's variable or file, and the names of the two keys that give them.
struct SecretSource<'a> {
    var: Option<&'a str>,
    file: Option<&'a Path>,
    keys: (&'static str, &'static str),
}

/// What a [`SecretSource`] held.
enum SecretText {
    /// The secret's text: not empty, one trailing newline of a file removed.
    Value(String),
    /// Not available here (with `needed` optional): the warning that says so.
    Missing(String),
}

impl SecretSource<'_> {
    /// The secret, `None` when neither key is set.
    fn load(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        at: &str,
        needed: SecretsNeeded,
    ) -> Result<Option<(Secret, Option<String>)>, ConfigError> {
        Ok(match self.read(env, at, needed)? {
            None => None,
            Some(SecretText::Missing(warning)) => Some((Secret::placeholder(), Some(warning))),
            Some(SecretText::Value(text)) => {
                // `read` refuses an empty secret, which is all `Secret::new` refuses.
                let secret = Secret::new(text)
                    .map_err(|_| invalid(key_at(at, self.keys.0), "the secret is empty"))?;
                Some((secret, None))
            }
        })
    }

    /// The secret's text, `None` when neither key is set; refused when both are, when it is
    /// empty, or (with `needed` required) when it is not there.
    fn read(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        at: &str,
        needed: SecretsNeeded,
    ) -> Result<Option<SecretText>, ConfigError> {
        let (env_key, file_key) = self.keys;
        let key = |k: &str| key_at(at, k);
        let missing = |k: &str, reason: String| match needed {
            SecretsNeeded::Required => Err(invalid(key(k), reason)),
            SecretsNeeded::Optional => Ok(Some(SecretText::Missing(format!(
                "{}: {reason} (not checked further)",
                key(k)
            )))),
        };
        match (self.var, self.file) {
            (Some(_), Some(_)) => Err(invalid(
                key(env_key),
                format!("set `{env_key}` or `{file_key}`, not both"),
            )),
            (Some(var), None) => {
                let Some(value) = env(var) else {
                    return missing(env_key, format!("environment variable {var} is not set"));
                };
                if value.is_empty() {
                    return Err(invalid(
                        key(env_key),
                        format!("environment variable {var} is empty"),
                    ));
                }
                Ok(Some(SecretText::Value(value)))
            }
            (None, Some(path)) => {
                let text = match std::fs::read_to_string(path) {
                    Ok(text) => text,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return missing(file_key, format!("{} does not exist", path.display()));
                    }
                    Err(e) => {
                        return Err(invalid(
                            key(file_key),
                            format!("cannot read {}: {e}", path.display()),
                        ));
                    }
                };
                let text = text.strip_suffix('\n').unwrap_or(&text);
                let text = text.strip_suffix('\r').unwrap_or(text);
                if text.is_empty() {
                    return Err(invalid(
                        key(file_key),
                        format!("{} is empty", path.display()),
                    ));
                }
                Ok(Some(SecretText::Value(text.to_owned())))
            }
            (None, None) => Ok(None),
        }
    }
}

/// The refusal of a secret written into the TOML itself.
pub(super) fn secret_in_toml(key: &str) -> ConfigError {
    invalid(
        key,
        "secrets are never read from the config file; use `secret_env` or `secret_file`",
    )
}

/// Refuses a `secret` key anywhere in the file before the typed layer sees it, so the message
/// says why instead of "unknown field", and the unknown-key lists never offer it.
pub(super) fn refuse_inline_secrets(table: &toml::Table) -> Result<(), ConfigError> {
    if table
        .get("signing")
        .and_then(toml::Value::as_table)
        .is_some_and(|signing| signing.contains_key("secret"))
    {
        return Err(secret_in_toml("`signing.secret`"));
    }
    let routes = table.get("route").and_then(toml::Value::as_array);
    for route in routes
        .into_iter()
        .flatten()
        .filter_map(toml::Value::as_table)
    {
        if route.contains_key("secret") {
            let name = route
                .get("name")
                .and_then(toml::Value::as_str)
                .unwrap_or("?");
            return Err(secret_in_toml(&format!("route `{name}`: `secret`")));
        }
    }
    Ok(())
}

/// The file's permission bits when others may read it; `None` otherwise (or off Unix).
pub(super) fn world_readable_mode(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o004 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "SET").then(|| "s3cret".to_owned())
    }

    fn from_env(var: &str, needed: SecretsNeeded) -> Result<(Secret, Option<String>), ConfigError> {
        let raw = RawSigning {
            secret_env: Some(var.into()),
            ..RawSigning::default()
        };
        load_secret(&raw, &env, "signing.", needed)
    }

    #[test]
    fn a_variable_that_is_not_set_fails_to_serve_and_warns_to_check() {
        let (secret, warning) = from_env("SET", SecretsNeeded::Required).expect("set");
        assert!(!secret.is_placeholder() && warning.is_none());
        let error = from_env("UNSET", SecretsNeeded::Required).expect_err("unset");
        assert_eq!(
            error.to_string(),
            "`signing.secret_env`: environment variable UNSET is not set"
        );
        let (secret, warning) = from_env("UNSET", SecretsNeeded::Optional).expect("checked");
        assert!(secret.is_placeholder());
        assert!(warning.expect("a warning").contains("UNSET is not set"));
    }

    #[test]
    fn a_secret_file_loses_one_trailing_newline_and_an_empty_one_is_refused() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        write!(file, "s3cret\r\n").expect("write");
        let raw = RawSigning {
            secret_file: Some(file.path().to_owned()),
            ..RawSigning::default()
        };
        let (secret, _) =
            load_secret(&raw, &env, "signing.", SecretsNeeded::Required).expect("read");
        let expected = Secret::new("s3cret".into()).expect("not empty");
        assert_eq!(secret.sign_hex(b"x"), expected.sign_hex(b"x"));
        let empty = tempfile::NamedTempFile::new().expect("temp file");
        let raw = RawSigning {
            secret_file: Some(empty.path().to_owned()),
            ..RawSigning::default()
        };
        // Empty is a mistake in the file, not a file that is elsewhere: refused even to check.
        assert!(load_secret(&raw, &env, "signing.", SecretsNeeded::Optional).is_err());
    }

    #[test]
    fn both_sources_at_once_are_refused() {
        let raw = RawSigning {
            secret_env: Some("SET".into()),
            secret_file: Some("/x".into()),
            ..RawSigning::default()
        };
        let error = load_secret(&raw, &env, "route `r`: ", SecretsNeeded::Required)
            .expect_err("both")
            .to_string();
        assert!(
            error.starts_with(
                "route `r`: `secret_env`: set `secret_env` or `secret_file`, not both"
            ),
            "{error}"
        );
    }

    #[test]
    fn a_secret_in_the_file_is_refused_wherever_it_is() {
        let table = |text: &str| toml::from_str::<toml::Table>(text).expect("toml");
        let signing = refuse_inline_secrets(&table("[signing]\nsecret = \"x\"\n"));
        assert!(
            signing
                .expect_err("refused")
                .to_string()
                .contains("`signing.secret`")
        );
        let route = refuse_inline_secrets(&table("[[route]]\nname = \"r\"\nsecret = 1\n"));
        assert!(
            route
                .expect_err("refused")
                .to_string()
                .contains("route `r`: `secret`")
        );
        assert!(refuse_inline_secrets(&table("[signing]\nsecret_env = \"X\"\n")).is_ok());
    }
}
