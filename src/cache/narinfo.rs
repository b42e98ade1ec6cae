//! `/<hash>.narinfo`: nix-serve's body (`docs/protocols.md` §4.3) plus `CA:`.
//!
//! Signatures: one fresh `Sig:` per key of ours, then those stored with the
//! path (`nix store sign`, substituted paths) under other key names; a
//! stored one that does not parse is left out with a warning, since a Nix
//! client refuses the whole narinfo over it (docs/protocols.md §5.2). Without keys, the stored
//! ones alone, so a cache of signed paths stays usable with no key here.
//!
//! Replies are remembered per worker, rendered and signed, until the store's
//! [`Generation`] changes (`store/cache.rs`): a repeated request costs a
//! look at SQLite's commit counter and a copy of the bytes, no look-up, no
//! rendering, no signing. They are also filed in the [`SharedNarinfos`]
//! the event loop answers from by itself, with no worker
//! (`narinfo/shared.rs`).

mod shared;

use crate::bounded::BoundedMap;
use crate::log;
use crate::nix::compression::Compression;
use crate::nix::narinfo;
use crate::nix::path_info::PathInfo;
use crate::nix::sig_cache::SigCache;
use crate::nix::signing::{merge_signatures, SecretKey};
use crate::nix::store_path::{HashPart, StoreDir};
use crate::store::upstream::Upstream;
use crate::store::{Generation, Store};

use crate::server::app::{Body, Response};

use super::response::{self, HandlerError, CACHE_SHORT};

pub use shared::{SharedNarinfos, Ticket};

/// Replies a [`WorkerNarinfos`] holds before it starts over: a rendered
/// narinfo is about 500 bytes, so a couple of megabytes per worker at most.
const WORKER_REPLIES: usize = 4096;

/// One worker's memory of narinfo replies (`None`: 404) for one store
/// generation, and of signatures by fingerprint. The signatures outlive a
/// change of generation: a fingerprint names its content, so its signature
/// never goes stale, and a busy store (a builder committing paths) changes
/// generation far more often than the paths asked for change.
pub struct WorkerNarinfos {
    generation: Option<Generation>,
    replies: BoundedMap<HashPart, Option<Vec<u8>>>,
    sigs: SigCache,
}

impl Default for WorkerNarinfos {
    fn default() -> Self {
        WorkerNarinfos {
            generation: None,
            replies: BoundedMap::new(WORKER_REPLIES),
            sigs: SigCache::default(),
        }
    }
}

/// Answers `hash`; with `shared`, also files the reply there under the
/// ticket its caller took before calling (`narinfo/shared.rs`). A path
/// the store lacks is asked of `upstream`, if any (`cache/upstream.rs`).
pub fn handle(
    store: &mut dyn Store,
    keys: &[SecretKey],
    mine: &mut WorkerNarinfos,
    hash: &HashPart,
    compression: Compression,
    shared: Option<(&SharedNarinfos, Ticket)>,
    upstream: Option<&Upstream>,
) -> Result<Response, HandlerError> {
    // Read before the look-up, so a remembered reply is never older than
    // the generation it is filed under.
    let generation = store.generation()?;
    if mine.generation != Some(generation) {
        mine.replies.clear();
        mine.generation = Some(generation);
    }
    let file = |body: &Option<Vec<u8>>| {
        if let Some((shared, ticket)) = shared {
            shared.file(ticket, *hash, body.clone(), generation.born());
        }
    };
    let body = match mine.replies.get(hash) {
        Some(reply) => reply.clone(),
        None => {
            let body = match store.path_info_by_hash(hash)? {
                Some(info) => Some(render_signed(
                    &info,
                    store.store_dir(),
                    keys,
                    &mut mine.sigs,
                    compression,
                )),
                None => None,
            };
            mine.replies.insert(*hash, body.clone());
            body
        }
    };
    match (body, upstream) {
        // Not filed: the loops would answer 404 for what an upstream has.
        (None, Some(up)) => super::upstream::narinfo(up, hash),
        (body, _) => {
            file(&body);
            Ok(reply_of(body))
        }
    }
}

/// The response for a rendered narinfo, or for none (404): the same
/// whether a worker or the event loop answers.
pub fn reply_of(body: Option<Vec<u8>>) -> Response {
    let mut r = match body {
        Some(body) => Response::new(200, "text/x-nix-narinfo", CACHE_SHORT, Body::Bytes(body)),
        // A 404 is only for "definitely absent" (docs/protocols.md §4.4).
        None => response::no_such_path(),
    };
    r.route = "narinfo";
    r
}

fn render_signed(
    info: &PathInfo,
    store_dir: &StoreDir,
    keys: &[SecretKey],
    sigs: &mut SigCache,
    compression: Compression,
) -> Vec<u8> {
    let ours: &[String] = if keys.is_empty() {
        &[]
    } else {
        sigs.signatures(keys, info.fingerprint(store_dir))
    };
    let (sigs, rejected) = merge_signatures(ours, &info.sigs);
    for e in rejected {
        log::warn(&format!(
            "{}: a stored signature is left out of its narinfo: {e}",
            store_dir.display_path(&info.path)
        ));
    }
    narinfo::render_compressed(info, store_dir, &sigs, compression).into_bytes()
}
