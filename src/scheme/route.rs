//! Each scheme's signer behind [`SignsUrls`], built from a route's [`SchemeConfig`]: what a
//! route calls to sign an object's URL.

use std::sync::{Arc, Mutex};

use super::akamai::{Algorithm, EdgeAuth, TokenFields, TokenTimes};
use super::cloudfront::{self, CloudFrontSigner, CustomPolicy};
use super::imgix::{self, ImgixSigner};
use super::s3::{self, S3Error, S3Signer};
use super::{SchemeError, SignsUrls, Validity};
use crate::config::SchemeConfig;

/// The signer for a route's scheme, from its config: `None` for Filestack's, which
/// [`crate::signer::RouteSigner`] signs itself. Errors name what is wrong with the key.
pub fn signer_for(config: &SchemeConfig) -> Result<Option<Arc<dyn SignsUrls>>, String> {
    Ok(Some(match config {
        SchemeConfig::Filestack => return Ok(None),
        SchemeConfig::CloudFront {
            key_pair_id,
            private_key,
            resource,
        } => Arc::new(CloudFrontUrls {
            signer: CloudFrontSigner::from_pem(key_pair_id, private_key.expose())
                .map_err(|e| e.to_string())?,
            resource: resource.clone(),
            shared: Mutex::new(None),
        }),
        SchemeConfig::Akamai {
            key,
            token_name,
            algorithm,
        } => {
            let algorithm: Algorithm = algorithm
                .parse()
                .map_err(|e: super::akamai::EdgeAuthKeyError| e.to_string())?;
            Arc::new(AkamaiUrls {
                auth: EdgeAuth::new(key.expose(), algorithm).map_err(|e| e.to_string())?,
                token_name: token_name.clone(),
            })
        }
        SchemeConfig::S3 {
            access_key_id,
            region,
            secret,
        } => Arc::new(S3Urls(
            S3Signer::new(access_key_id.clone(), secret.clone(), region.clone())
                .map_err(|e| e.to_string())?,
        )),
        SchemeConfig::Imgix { token, expires } => Arc::new(ImgixUrls {
            signer: ImgixSigner::new(token.clone()),
            expires: *expires,
        }),
    }))
}

/// CloudFront: a canned policy per URL (`Expires`, `Signature`, `Key-Pair-Id`), or, for URLs
/// the route's `policy_resource` covers, one custom policy with that wildcard resource per
/// bucket (`Policy`, `Signature`, `Key-Pair-Id`), signed once: an RSA signature per bucket
/// instead of one per URL.
struct CloudFrontUrls {
    signer: CloudFrontSigner,
    resource: Option<String>,
    /// The custom policy's parameters for the latest expiry signed.
    shared: Mutex<Option<(u64, Arc<str>)>>,
}

impl CloudFrontUrls {
    /// `Policy=…&Signature=…&Key-Pair-Id=…` for `resource` until `expiry`: the same for every
    /// URL, so made once per expiry.
    fn shared_params(&self, resource: &str, expiry: u64) -> Result<Arc<str>, SchemeError> {
        let mut shared = self
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((made_for, params)) = shared.as_ref()
            && *made_for == expiry
        {
            return Ok(Arc::clone(params));
        }
        let policy = CustomPolicy {
            resource,
            expiry,
            start: None,
            ip: None,
        };
        let signed = self
            .signer
            .sign_custom("/", &policy)
            .map_err(|_| SchemeError::Url("the RSA signature could not be made"))?;
        let params: Arc<str> = signed
            .split_once('?')
            .map_or("", |(_, params)| params)
            .into();
        *shared = Some((expiry, Arc::clone(&params)));
        Ok(params)
    }
}

impl SignsUrls for CloudFrontUrls {
    fn sign_url(&self, url: &str, validity: Validity) -> Result<String, SchemeError> {
        if let Some(resource) = self
            .resource
            .as_deref()
            .filter(|resource| super::wildcard::matches(resource, url))
        {
            let params = self.shared_params(resource, validity.expiry)?;
            let separator = if url.contains('?') { '&' } else { '?' };
            return Ok(format!("{url}{separator}{params}"));
        }
        self.signer
            .sign_canned(url, validity.expiry)
            .map_err(|_| SchemeError::Url("the RSA signature could not be made"))
    }

    fn is_credential(&self, name: &str) -> bool {
        cloudfront::CREDENTIAL_PARAMS
            .iter()
            .any(|param| name.eq_ignore_ascii_case(param))
    }
}

/// Akamai EdgeAuth: an ACL token for the object's path (`st` at the bucket's start, `exp` at
/// the expiry) in the query parameter `token_name`.
struct AkamaiUrls {
    auth: EdgeAuth,
    token_name: String,
}

impl SignsUrls for AkamaiUrls {
    fn sign_url(&self, url: &str, validity: Validity) -> Result<String, SchemeError> {
        let (_, path_and_query) = split_origin(url)?;
        let path = path_and_query
            .split_once('?')
            .map_or(path_and_query, |(path, _)| path);
        // The ACL is written into the token as it is: a `*` in the path would grant every path
        // it matches, a `!` another ACL of the client's choosing (outside the route's
        // upstream, too), a `~` another field.
        if !self.auth.is_literal_acl(path) {
            return Err(SchemeError::Path(
                "`*`, `?`, `!` and `~` are an Akamai ACL's wildcards and delimiters",
            ));
        }
        // The token travels unescaped (as the edge reads it) in a query parameter, where a `&`
        // would cut it, or in a cookie, whose value cannot hold a `,`.
        if path.contains(['&', ',']) {
            return Err(SchemeError::Path(
                "`&` and `,` would cut an Akamai token in the query or cookie that carries it",
            ));
        }
        let times = TokenTimes::try_from(validity)
            .map_err(|_| SchemeError::Url("the expiry is not after the bucket's start"))?;
        let token = self.auth.acl_token(&[path], times, &TokenFields::default());
        let separator = if url.contains('?') { '&' } else { '?' };
        Ok(format!("{url}{separator}{}={token}", self.token_name))
    }

    fn is_credential(&self, name: &str) -> bool {
        name.eq_ignore_ascii_case(&self.token_name)
    }
}

/// S3-compatible presigned GET: `X-Amz-Date` at the bucket's start, `X-Amz-Expires` to the
/// expiry.
struct S3Urls(S3Signer);

impl SignsUrls for S3Urls {
    fn sign_url(&self, url: &str, validity: Validity) -> Result<String, SchemeError> {
        self.0.presign(url, validity).map_err(|e| match e {
            S3Error::TooLong(_) => SchemeError::TooLong,
            _ => SchemeError::Url("not a URL SigV4 can presign"),
        })
    }

    fn is_credential(&self, name: &str) -> bool {
        s3::CREDENTIAL_PARAMS
            .iter()
            .any(|param| name.eq_ignore_ascii_case(param))
    }
}

/// imgix: the `s` parameter over the path and query as written, with a bucketed `expires`
/// when the route asks for one.
struct ImgixUrls {
    signer: ImgixSigner,
    expires: bool,
}

impl SignsUrls for ImgixUrls {
    fn sign_url(&self, url: &str, validity: Validity) -> Result<String, SchemeError> {
        let (origin, path_and_query) = split_origin(url)?;
        let expires = self.expires.then_some(validity.expiry);
        let signed = self
            .signer
            .sign(path_and_query, expires)
            .map_err(|_| SchemeError::Url("not a path imgix can sign"))?;
        Ok(format!("{origin}{signed}"))
    }

    fn is_credential(&self, name: &str) -> bool {
        imgix::CREDENTIAL_PARAMS
            .iter()
            .any(|param| name.eq_ignore_ascii_case(param))
            || (self.expires && name.eq_ignore_ascii_case(imgix::EXPIRES_PARAM))
    }
}

/// `url` as its origin (`https://host[:port]`) and its path and query (from the first `/`).
pub(crate) fn split_origin(url: &str) -> Result<(&str, &str), SchemeError> {
    let (_, after_scheme) = url
        .split_once("://")
        .ok_or(SchemeError::Url("not an absolute URL"))?;
    let slash = after_scheme.find('/').ok_or(SchemeError::Url("no path"))?;
    Ok(url.split_at(url.len() - after_scheme.len() + slash))
}
