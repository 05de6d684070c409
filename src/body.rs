//! The body type both directions of the proxy use, named here (a leaf module)
//! so that `backend` (upstream connections) and `proxy` can share it without
//! depending on each other.

use bytes::Bytes;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;
