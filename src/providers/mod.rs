//! Probing LLM providers: what a probe asks each provider type, how its answer is classified,
//! and how consecutive outcomes turn into health.

pub mod health;
pub mod listing;
pub mod probe;
pub mod scrub;

use std::fmt;

/// Why a probe failed. Each class is a stable condition reason and a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// DNS, connection or TLS failure.
    Unreachable,
    /// No answer within `healthCheck.timeout`.
    Timeout,
    /// 401 or 403: the credential was refused.
    Unauthorized,
    /// 429.
    RateLimited,
    /// 5xx.
    ServerError,
    /// A configured model is absent from the provider's listing.
    ModelNotFound,
    /// An answer that is not the listing this provider type returns.
    InvalidResponse,
    /// The referenced Secret or key does not exist.
    CredentialsNotFound,
}

impl FailureClass {
    pub fn reason(self) -> &'static str {
        match self {
            FailureClass::Unreachable => "Unreachable",
            FailureClass::Timeout => "Timeout",
            FailureClass::Unauthorized => "Unauthorized",
            FailureClass::RateLimited => "RateLimited",
            FailureClass::ServerError => "ServerError",
            FailureClass::ModelNotFound => "ModelNotFound",
            FailureClass::InvalidResponse => "InvalidResponse",
            FailureClass::CredentialsNotFound => "CredentialsNotFound",
        }
    }

    /// Whether a retry inside the same probe may succeed.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            FailureClass::Unreachable
                | FailureClass::Timeout
                | FailureClass::RateLimited
                | FailureClass::ServerError
        )
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// A failed probe: its class and a message safe to show (scrubbed, bounded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeFailure {
    pub class: FailureClass,
    pub message: String,
}

/// What one probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The provider answered with its model listing and offers every configured model.
    Healthy {
        models: Vec<String>,
    },
    Failed(ProbeFailure),
}
