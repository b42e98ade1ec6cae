//! HTTP/1.x on the wire: request heads in ([`request`], over `httparse`),
//! response heads out ([`response`]). The application never sees either.

pub mod request;
pub mod response;
