//! Bearer-token authentication for FormatData calls (health stays open so probes need no secret).

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Checks `authorization: Bearer <token>` on every call, when a token is configured.
#[derive(Clone, Default)]
pub struct RequireBearer {
    /// The whole expected header value, `Bearer <token>`; `None` lets every call through.
    expected: Option<Arc<[u8]>>,
}

impl RequireBearer {
    pub fn new(token: Option<&str>) -> Self {
        Self {
            expected: token.map(|token| format!("Bearer {token}").into_bytes().into()),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.expected.is_some()
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
        let Some(expected) = &self.expected else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <token>"))?;
        // Constant time, so response timing does not reveal how much of a guess was right.
        // (The length can still show; it says nothing about the content.)
        if bool::from(given.as_bytes().ct_eq(expected)) {
            Ok(request)
        } else {
            Err(Status::unauthenticated("invalid bearer token"))
        }
    }
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
    fn debug_output_hides_the_token() {
        assert!(!format!("{:?}", RequireBearer::new(Some("s3cret"))).contains("s3cret"));
    }
}
