//! The route table (src/cache/routes.rs): never panics on any method and
//! target, and every route it accepts, written back in its canonical URL,
//! parses to the same route; a NAR hash is accepted only in its canonical
//! nix32 spelling, so one NAR has one URL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nix_serve_sd::server::app::Method;
use nix_serve_sd::cache::routes::{parse, LogName, Route, RouteError};

fn canonical(route: &Route) -> String {
    match route {
        Route::NarInfo(h) => format!("/{h}.narinfo"),
        Route::CacheInfo => "/nix-cache-info".to_owned(),
        Route::Nar {
            hash,
            nar_hash: None,
        } => format!("/nar/{hash}.nar"),
        Route::Nar {
            hash,
            nar_hash: Some(n),
        } => format!("/nar/{hash}-{}.nar", n.to_nix32()),
        Route::NarZstd {
            hash,
            nar_hash: None,
        } => format!("/nar/{hash}.nar.zst"),
        Route::NarZstd {
            hash,
            nar_hash: Some(n),
        } => format!("/nar/{hash}-{}.nar.zst", n.to_nix32()),
        Route::Listing(h) => format!("/{h}.ls"),
        Route::Log(LogName::Hash(h)) => format!("/log/{h}"),
        Route::Log(LogName::Path(p)) => format!("/log/{p}"),
        Route::Metrics => "/metrics".to_owned(),
    }
}

// The input: one byte choosing the method, then the target as UTF-8.
fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let Ok(target) = std::str::from_utf8(rest) else {
        return;
    };
    let method = match m % 3 {
        0 => Method::Get,
        1 => Method::Head,
        _ => Method::Other("POST".into()),
    };
    let result = parse(&method, target);
    if matches!(method, Method::Other(_)) {
        assert_eq!(result, Err(RouteError::Method));
        return;
    }
    if let Ok(route) = result {
        let url = canonical(&route);
        assert_eq!(
            parse(&method, &url),
            Ok(route.clone()),
            "{target:?} -> {url}"
        );
        // Whatever spelling was accepted, the hashes in it are canonical.
        if let Route::Nar {
            hash,
            nar_hash: Some(n),
        }
        | Route::NarZstd {
            hash,
            nar_hash: Some(n),
        } = &route
        {
            let n32 = n.to_nix32();
            assert!(target.contains(&n32), "{target:?}: NAR hash not as {n32}");
            assert!(target.contains(hash.as_str()));
        }
    }
});
