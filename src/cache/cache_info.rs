//! `/nix-cache-info` (`docs/protocols.md` §6). It must answer 200: on a 404,
//! Nix 2.8 tries to create the cache and fails.

use crate::nix::store_path::StoreDir;

use crate::server::app::{Body, Response};

use super::response::CACHE_SHORT;

pub fn handle(store_dir: &StoreDir, priority: u32) -> Response {
    let body = format!("StoreDir: {store_dir}\nWantMassQuery: 1\nPriority: {priority}\n");
    Response::new(
        200,
        "text/x-nix-cache-info",
        CACHE_SHORT,
        Body::Bytes(body.into_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_byte_exact() {
        let r = handle(&StoreDir::default(), 30);
        let Body::Bytes(b) = r.body else {
            panic!("bytes")
        };
        assert_eq!(b, b"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n");
        assert_eq!(r.status, 200);
    }
}
