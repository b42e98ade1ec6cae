//! The HTTP layer: route table, one handler per endpoint, responses, and the
//! server loop (`design.md` "One request, end to end").

pub mod cache_info;
pub mod conn;
pub mod listen;
pub mod nar;
pub mod narinfo;
pub mod range;
pub mod request;
pub mod response;
pub mod routes;
pub mod server;

use crate::nix::signing::SecretKey;
use crate::store::{Opener, Store, StoreError};

use request::{Head, Method};
use response::{HandlerError, Response};
use routes::Route;

/// What every worker shares, read-only: keys loaded once at start-up.
pub struct Service {
    pub keys: Vec<SecretKey>,
    pub priority: u32,
}

/// Makes a store connection for a worker: [`open_store`] of the resolved
/// store (tests wrap it to count the connections made).
pub type OpenStore = Box<dyn Fn() -> Result<Box<dyn Store>, StoreError> + Send + Sync>;

/// A fresh connection from `opener` on every call.
pub fn open_store(opener: Opener) -> OpenStore {
    Box::new(move || opener.open())
}

/// One worker's own state: its store connection, opened again lazily after
/// it was dropped (daemon restarted, protocol error), and its memo of
/// narinfo replies and signatures. No lock on the hot path.
pub struct StoreSlot {
    conn: Option<Box<dyn Store>>,
    narinfos: narinfo::Memo,
}

impl StoreSlot {
    pub fn new(conn: Option<Box<dyn Store>>) -> Self {
        StoreSlot {
            conn,
            narinfos: narinfo::Memo::default(),
        }
    }

    /// One slot per worker, each with its connection made now: a store that
    /// cannot be opened stops start-up instead of failing the first requests.
    pub fn open_all(open: &OpenStore, workers: usize) -> Result<Vec<StoreSlot>, StoreError> {
        (0..workers)
            .map(|_| Ok(StoreSlot::new(Some(open()?))))
            .collect()
    }

    pub fn get(&mut self, open: &OpenStore) -> Result<&mut dyn Store, StoreError> {
        connected(&mut self.conn, open)
    }

    /// Drops the connection; the next request opens a new one.
    pub fn reset(&mut self) {
        self.conn = None;
    }
}

fn connected<'c>(
    conn: &'c mut Option<Box<dyn Store>>,
    open: &OpenStore,
) -> Result<&'c mut dyn Store, StoreError> {
    if conn.is_none() {
        *conn = Some(open()?);
    }
    Ok(conn.as_deref_mut().expect("just opened"))
}

/// Routes one request and runs its handler. The route is checked before the
/// store is touched, so bad requests get their 4xx even when it is down.
pub fn respond<'s>(
    svc: &Service,
    open: &OpenStore,
    slot: &'s mut StoreSlot,
    head: &Head,
) -> Result<Response<'s>, HandlerError> {
    let route = routes::parse(&head.method, &head.target).map_err(HandlerError::Route)?;
    let StoreSlot { conn, narinfos } = slot;
    let store = connected(conn, open)?;
    match route {
        Route::NarInfo(hash) => narinfo::handle(store, &svc.keys, narinfos, &hash),
        Route::Nar { hash, nar_hash } => nar::handle(
            store,
            &nar::NarRequest {
                hash,
                nar_hash,
                range: head.range.as_deref(),
                head_only: head.method == Method::Head,
            },
        ),
        Route::CacheInfo => Ok(cache_info::handle(store.store_dir(), svc.priority)),
    }
}
