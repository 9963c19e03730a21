//! Bearer-token authentication for FormatData calls (health stays open so probes need no secret).

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Checks `authorization: Bearer <token>` on every call, when a token is configured.
#[derive(Clone, Default)]
pub(in crate::server) struct RequireBearer {
    /// The token expected after the scheme; `None` lets every call through.
    token: Option<Arc<[u8]>>,
}

impl RequireBearer {
    pub(in crate::server) fn new(token: Option<&str>) -> Self {
        Self {
            token: token.map(|token| token.as_bytes().into()),
        }
    }

    pub(in crate::server) fn is_enabled(&self) -> bool {
        self.token.is_some()
    }
}

impl std::fmt::Debug for RequireBearer {
    // Never print the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequireBearer")
            .field("enabled", &self.is_enabled())
            .finish()
    }
}

impl Interceptor for RequireBearer {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.token else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <token>"))?;
        // Constant time, so response timing does not reveal how much of a guess was right.
        // (The length can still show; it says nothing about the content.) The scheme is no
        // secret: comparing it first leaks nothing.
        let matches = bearer_credentials(given.as_bytes())
            .is_some_and(|token| bool::from(token.ct_eq(expected)));
        if matches {
            Ok(request)
        } else {
            Err(Status::unauthenticated("invalid bearer token"))
        }
    }
}

/// The token of an `authorization` value in the Bearer scheme: `Bearer`, in any case (RFC 6750
/// via RFC 7235: auth schemes are case-insensitive, and some clients send `bearer`), then one
/// or more spaces.
fn bearer_credentials(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer";
    let (scheme, rest) = value.split_at_checked(SCHEME.len())?;
    (scheme.eq_ignore_ascii_case(SCHEME) && rest.first() == Some(&b' '))
        .then(|| rest.trim_ascii_start())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn call(interceptor: &mut RequireBearer, header: Option<&str>) -> Result<(), Code> {
        let mut request = Request::new(());
        if let Some(value) = header {
            request
                .metadata_mut()
                .insert("authorization", value.parse().unwrap());
        }
        interceptor.call(request).map(drop).map_err(|s| s.code())
    }

    #[test]
    fn without_a_token_everything_passes() {
        assert_eq!(call(&mut RequireBearer::new(None), None), Ok(()));
    }

    #[test]
    fn with_a_token_only_the_exact_header_passes() {
        let mut auth = RequireBearer::new(Some("s3cret"));
        assert_eq!(call(&mut auth, Some("Bearer s3cret")), Ok(()));
        for wrong in [
            None,
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("s3cret"),
        ] {
            assert_eq!(
                call(&mut auth, wrong),
                Err(Code::Unauthenticated),
                "{wrong:?}"
            );
        }
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_the_token_is_not() {
        let mut auth = RequireBearer::new(Some("s3cret"));
        for right in [
            "bearer s3cret",
            "BEARER s3cret",
            "bEaReR s3cret",
            "Bearer  s3cret",
        ] {
            assert_eq!(call(&mut auth, Some(right)), Ok(()), "{right}");
        }
        for wrong in [
            "bearer S3CRET",
            "Bearers3cret",
            "Bearer",
            "Bearer ",
            "Basic s3cret",
            "Bear s3cret",
            "Bearer s3cret ",
        ] {
            assert_eq!(
                call(&mut auth, Some(wrong)),
                Err(Code::Unauthenticated),
                "{wrong}"
            );
        }
    }

    #[test]
    fn debug_output_hides_the_token() {
        assert!(!format!("{:?}", RequireBearer::new(Some("s3cret"))).contains("s3cret"));
    }
}
