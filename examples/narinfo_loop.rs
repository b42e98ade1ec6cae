//! A release-mode micro loop over the narinfo path, in process (no HTTP):
//! what one request costs the store layer and the handler, for comparing
//! builds (bench/README.md, "Comparing two builds").
//!
//! ```sh
//! cargo run --release --example narinfo_loop -- STORE STATE KEY MODE [ROUNDS]
//! ```
//!
//! STORE is a `--store` URI (`local`, `unix:///path/to/socket`), STATE the
//! directory `bench/lib/setup.sh` filled, KEY a secret key file. MODE:
//! `present` and `absent` time `narinfo::handle` over the 1,000 corpus paths
//! or the 1,000 absent hashes, after one warm-up pass (so mostly cache hits);
//! `row` times `Store::path_info`, which is never cached (one row and its
//! references); `watch` times the event loop's look at the change signal
//! alone (`store::sqlite::ChangeWatch`: `PRAGMA data_version` on its own
//! connection); `loop` times the event loop's whole answer to a present
//! narinfo from the shared replies (`cache::NarinfoFastPath::answer`: route, watch,
//! look-up, copy). Prints the best round's time per call.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix_serve_sd::cache::narinfo::{self, SharedNarinfos};
use nix_serve_sd::cache::NarinfoFastPath;
use nix_serve_sd::nix::compression::Compression;
use nix_serve_sd::nix::signing::SecretKey;
use nix_serve_sd::nix::store_path::{HashPart, StoreDir, StorePath};
use nix_serve_sd::server::app::Request;
use nix_serve_sd::store::daemon::ChangeSignal;
use nix_serve_sd::store::sqlite::ChangeWatch;
use nix_serve_sd::store::Opener;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [store_uri, state, key, mode, rest @ ..] = args.as_slice() else {
        eprintln!("usage: narinfo_loop STORE STATE KEY present|absent|row|watch|loop [ROUNDS]");
        return ExitCode::from(2);
    };
    let rounds: usize = rest.first().map_or(20, |r| r.parse().expect("ROUNDS"));
    let env = |k: &str| std::env::var(k).ok();
    let opener = Opener::resolve(store_uri, &env).expect("store");
    let mut store = opener.open().expect("store connection");
    let keys = vec![SecretKey::from_file(Path::new(key)).expect("key")];
    let tsv = std::fs::read_to_string(Path::new(state).join("paths.tsv")).expect("paths.tsv");
    let corpus: Vec<StorePath> = tsv
        .lines()
        .filter(|l| l.starts_with("corpus-"))
        .map(|l| {
            StoreDir::default()
                .parse_path(l.split('\t').nth(1).unwrap())
                .unwrap()
        })
        .collect();
    let hashes: Vec<HashPart> = match mode.as_str() {
        "absent" => std::fs::read_to_string(Path::new(state).join("absent.txt"))
            .expect("absent.txt")
            .split_whitespace()
            .map(|h| HashPart::parse(h).unwrap())
            .collect(),
        _ => corpus.iter().map(StorePath::hash_part).collect(),
    };
    let mut memo = Default::default();
    let replies = std::sync::Arc::new(SharedNarinfos::for_signal(&opener.change_signal()));
    let mut fast = NarinfoFastPath::new(replies.clone(), opener.change_signal(), None);
    let heads: Vec<Request> = hashes
        .iter()
        .map(|h| Request::get(&format!("/{h}.narinfo")))
        .collect();
    // As the loop has it (`cache::fast`): no wait, and none without a database.
    let mut watch = match opener.change_signal() {
        ChangeSignal::Database(db) => Some(ChangeWatch::new(db, Duration::ZERO)),
        ChangeSignal::Every(_) => None,
    };
    if mode == "loop" {
        // The loop's first look starts an epoch; the worker's replies are
        // filed under it.
        fast.answer(&heads[0]);
        for h in &hashes {
            let ticket = Some((&*replies, replies.ticket(None)));
            narinfo::handle(
                store.as_mut(),
                &keys,
                &mut memo,
                h,
                Compression::None,
                ticket,
                None,
            )
            .unwrap();
        }
    }
    let mut once = |store: &mut dyn nix_serve_sd::store::Store| match mode.as_str() {
        "watch" => {
            for _ in &hashes {
                std::hint::black_box(watch.as_mut().map(ChangeWatch::look));
            }
        }
        "loop" => {
            for h in &heads {
                std::hint::black_box(fast.answer(h).expect("a reply the loop knows"));
            }
        }
        "row" => {
            for p in &corpus {
                std::hint::black_box(store.path_info(p).unwrap());
            }
        }
        _ => {
            for h in &hashes {
                std::hint::black_box(
                    narinfo::handle(store, &keys, &mut memo, h, Compression::None, None, None)
                        .unwrap(),
                );
            }
        }
    };
    once(store.as_mut());
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let start = Instant::now();
        once(store.as_mut());
        best = best.min(start.elapsed().as_nanos() as f64 / hashes.len() as f64);
    }
    println!(
        "{store_uri} {mode}: {best:.0} ns per call (best of {rounds} rounds of {})",
        hashes.len()
    );
    ExitCode::SUCCESS
}
