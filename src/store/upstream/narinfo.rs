//! Asking the upstream caches for a path's narinfo, in order, and the
//! narinfo we serve for it; with a short memory of the answers.
//!
//! What we serve is the upstream's path info with our own NAR URL
//! (`nar/<hash>-<narhash>.nar`, the bytes decompressed), `Compression: none`,
//! no `FileHash`/`FileSize` (they describe the upstream's file), and the
//! upstream's signatures: they sign the fingerprint (path, NAR hash, size,
//! references), which is unchanged, never the URL.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::client::{CacheUrl, Client, FetchError, MAX_NARINFO};
use super::decompress::Method;
use crate::bounded::BoundedMap;
use crate::log;
use crate::nix::narinfo::{self, parse::NarInfo};
use crate::nix::path_info::PathInfo;
use crate::nix::signing::merge_signatures;
use crate::nix::store_path::{HashPart, StoreDir};

/// How long a narinfo an upstream has is remembered: a client's HEAD, GET
/// and NAR requests for a path come within seconds, and a closure's
/// narinfos within minutes of each other.
pub const FOUND_TTL: Duration = Duration::from_secs(300);
/// How long "no upstream has it" is remembered: short, since a path an
/// upstream builds (Hydra) appears there at any moment, and our client
/// then caches our 404 for an hour by itself.
pub const ABSENT_TTL: Duration = Duration::from_secs(60);
/// An upstream that did not answer (no connection, a time-out, a 5xx) is
/// not asked again for this long: requests meanwhile count it as failed at
/// once instead of each waiting for its time-out. Never remembered per path.
pub const DOWN_FOR: Duration = Duration::from_secs(10);
/// Answers remembered at most: about 1 KiB each, 16 MiB in all, shared by
/// every worker; a miss costs a round trip upstream, not a local look-up.
const ANSWERS: usize = 16_384;

/// A path an upstream has, and how to fetch its NAR.
#[derive(Debug, PartialEq, Eq)]
pub struct Found {
    /// Which upstream (its index in the configured order).
    pub cache: usize,
    /// As the upstream's narinfo says; `sigs` are its well-formed `Sig:`s.
    pub info: PathInfo,
    /// The NAR file, absolute.
    pub nar_url: String,
    pub compression: Method,
}

impl Found {
    /// The narinfo we serve for it (see the module's comment).
    pub fn render(&self, store_dir: &StoreDir) -> String {
        narinfo::render(&self.info, store_dir, &self.info.sigs)
    }
}

/// The upstreams' answer for one hash part.
#[derive(Clone, Debug)]
pub enum Lookup {
    Found(Arc<Found>),
    /// Every upstream answered that it does not have it (or has it in a
    /// form we cannot fetch, which is as final).
    Absent,
    /// No upstream has it, and at least one did not answer: a client must
    /// not take this for "absent" (it would cache a 404 for an hour). The
    /// reasons, for the log.
    Failed(Arc<str>),
}

/// Upstream narinfo look-ups, remembered.
pub struct Narinfos {
    caches: Vec<CacheUrl>,
    store_dir: StoreDir,
    memory: Mutex<BoundedMap<HashPart, (Instant, Lookup)>>,
    down_until: Mutex<Vec<Option<Instant>>>,
}

impl Narinfos {
    pub fn new(caches: Vec<CacheUrl>, store_dir: StoreDir) -> Self {
        let n = caches.len();
        Narinfos {
            caches,
            store_dir,
            memory: Mutex::new(BoundedMap::new(ANSWERS)),
            down_until: Mutex::new(vec![None; n]),
        }
    }

    /// The answer for `hash`: remembered (see the TTLs), else asked of each
    /// upstream in order until one has it. `asked` counts each upstream
    /// request by result (`found`, `absent`, `failed`).
    pub fn lookup(&self, client: &Client, hash: &HashPart, asked: &dyn Fn(&'static str)) -> Lookup {
        let now = Instant::now();
        if let Some(known) = self.remembered(hash, now) {
            return known;
        }
        let mut failures: Vec<String> = Vec::new();
        let mut answer = None;
        for (i, cache) in self.caches.iter().enumerate() {
            if self.is_down(i, now) {
                failures.push(format!("{cache}: not answering (skipped for {DOWN_FOR:?})"));
                continue;
            }
            match self.ask(client, i, hash) {
                Ok(Some(found)) => {
                    asked("found");
                    answer = Some(Lookup::Found(Arc::new(found)));
                    break;
                }
                Ok(None) => asked("absent"),
                Err(why) => {
                    asked("failed");
                    failures.push(why);
                }
            }
        }
        let answer = answer.unwrap_or_else(|| {
            if failures.is_empty() {
                Lookup::Absent
            } else {
                Lookup::Failed(failures.join("; ").into())
            }
        });
        let ttl = match &answer {
            Lookup::Found(_) => Some(FOUND_TTL),
            Lookup::Absent => Some(ABSENT_TTL),
            Lookup::Failed(_) => None,
        };
        if let Some(ttl) = ttl {
            self.remember(*hash, now + ttl, answer.clone());
        }
        answer
    }

    /// What upstream `i` has for `hash` (`None`: nothing it can serve);
    /// `Err` when it gave no answer.
    fn ask(&self, client: &Client, i: usize, hash: &HashPart) -> Result<Option<Found>, String> {
        let cache = &self.caches[i];
        let url = cache.file(&format!("{hash}.narinfo"));
        let body = match client.get_small(&url, MAX_NARINFO) {
            Ok(Some(body)) => body,
            Ok(None) => return Ok(None),
            Err(e) => {
                if matches!(e, FetchError::Transport { .. })
                    || matches!(e, FetchError::Status { status, .. } if status >= 500)
                {
                    self.mark_down(i);
                }
                return Err(log::chain(&e));
            }
        };
        // A narinfo that does not parse, or names another path, is a broken
        // upstream, not an absent path.
        let text = String::from_utf8(body).map_err(|_| format!("{url}: not UTF-8"))?;
        let parsed = NarInfo::parse(&text, &self.store_dir).map_err(|e| format!("{url}: {e}"))?;
        if parsed.store_path.hash_part() != *hash {
            return Err(format!("{url}: the narinfo is for {}", parsed.store_path));
        }
        let Some(compression) = Method::parse(&parsed.compression) else {
            log::warn(&format!(
                "{url}: Compression {:?} is not one we decode (none, xz, zstd, bzip2): \
                 this upstream's copy cannot be served",
                parsed.compression
            ));
            return Ok(None);
        };
        let Some(nar_url) = cache.resolve(&parsed.url) else {
            log::warn(&format!(
                "{url}: URL {:?} is not http(s): this upstream's copy cannot be served",
                parsed.url
            ));
            return Ok(None);
        };
        Ok(Some(Found {
            cache: i,
            info: self.path_info(parsed, &url),
            nar_url,
            compression,
        }))
    }

    fn path_info(&self, parsed: NarInfo, url: &str) -> PathInfo {
        // A Sig a Nix client cannot decode makes it refuse the whole
        // narinfo; leave such ones out, as for stored signatures.
        let (sigs, rejected) = merge_signatures(&[], &parsed.sigs);
        for e in rejected {
            log::warn(&format!("{url}: a signature is left out: {e}"));
        }
        let sigs = sigs.into_iter().map(str::to_owned).collect();
        PathInfo {
            path: parsed.store_path,
            deriver: parsed.deriver,
            nar_hash: parsed.nar_hash,
            nar_size: parsed.nar_size,
            references: parsed.references,
            registration_time: 0,
            ultimate: false,
            sigs,
            ca: parsed.ca,
        }
    }

    fn remembered(&self, hash: &HashPart, now: Instant) -> Option<Lookup> {
        let memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        match memory.get(hash) {
            Some((expires, answer)) if now < *expires => Some(answer.clone()),
            _ => None,
        }
    }

    fn remember(&self, hash: HashPart, expires: Instant, answer: Lookup) {
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        memory.insert_or_prune(hash, (expires, answer), |_, (e, _)| *e <= now);
    }

    /// Forgets `hash` (its NAR did not match what the narinfo said).
    pub fn forget(&self, hash: &HashPart) {
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.remove(hash);
    }

    fn is_down(&self, i: usize, now: Instant) -> bool {
        let down = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        down[i].is_some_and(|until| now < until)
    }

    fn mark_down(&self, i: usize) {
        let mut down = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        down[i] = Some(Instant::now() + DOWN_FOR);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::path_info::tests::ref_txt;

    #[test]
    fn served_narinfo_points_to_us_uncompressed_with_the_upstreams_signatures() {
        let mut info = ref_txt();
        info.sigs = vec![
            "cache.nixos.org-1:RvgguPkrgkxKkHjxRHhkvW4Y7NMmCpxEs7wPME2s+9MI5qnG6uQZWhpG9UYR0tzPOgGeYx4smOokvw4d60fUBg==".into(),
        ];
        let found = Found {
            cache: 0,
            info,
            nar_url: "https://cache.example/nar/abc.nar.xz".into(),
            compression: Method::Xz,
        };
        assert_eq!(
            found.render(&StoreDir::default()),
            "StorePath: /nix/store/wmm9hngfwxsjqpiy50lligndn8n83f6w-ref.txt\n\
             URL: nar/wmm9hngfwxsjqpiy50lligndn8n83f6w-1snz5sd22qrv3f5ldsnclydnqi3wqwi7ig3yrdx9cj44n6qb04jl.nar\n\
             Compression: none\n\
             NarHash: sha256:1snz5sd22qrv3f5ldsnclydnqi3wqwi7ig3yrdx9cj44n6qb04jl\n\
             NarSize: 176\n\
             References: i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt\n\
             Sig: cache.nixos.org-1:RvgguPkrgkxKkHjxRHhkvW4Y7NMmCpxEs7wPME2s+9MI5qnG6uQZWhpG9UYR0tzPOgGeYx4smOokvw4d60fUBg==\n\
             CA: text:sha256:1sn3ap5rcl7ai63rmink9spijl8kykz8v44axykd8cnkgb387pd2\n"
        );
    }

    #[test]
    fn an_upstream_narinfo_becomes_path_info_without_bad_signatures() {
        let text = "StorePath: /nix/store/wmm9hngfwxsjqpiy50lligndn8n83f6w-ref.txt\n\
             URL: nar/0x.nar.xz\n\
             Compression: xz\n\
             FileHash: sha256:1snz5sd22qrv3f5ldsnclydnqi3wqwi7ig3yrdx9cj44n6qb04jl\n\
             FileSize: 100\n\
             NarHash: sha256:1snz5sd22qrv3f5ldsnclydnqi3wqwi7ig3yrdx9cj44n6qb04jl\n\
             NarSize: 176\n\
             References: i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt\n\
             Deriver: 9ygls0mbwcvql4g896aar9vxfbzqwf0n-logtest.drv\n\
             Sig: broken\n\
             Sig: k:RvgguPkrgkxKkHjxRHhkvW4Y7NMmCpxEs7wPME2s+9MI5qnG6uQZWhpG9UYR0tzPOgGeYx4smOokvw4d60fUBg==\n";
        let narinfos = Narinfos::new(vec![], StoreDir::default());
        let parsed = NarInfo::parse(text, &StoreDir::default()).unwrap();
        let info = narinfos.path_info(parsed, "test");
        assert_eq!(info.nar_size, 176);
        assert_eq!(info.references, ref_txt().references);
        assert_eq!(
            info.deriver.as_ref().map(|d| d.to_string()),
            Some("9ygls0mbwcvql4g896aar9vxfbzqwf0n-logtest.drv".into())
        );
        assert_eq!(info.sigs.len(), 1, "{:?}", info.sigs);
        assert!(info.sigs[0].starts_with("k:"));
        assert!(!info.ultimate);
    }

    #[test]
    fn memory_expires_exactly() {
        let narinfos = Narinfos::new(vec![], StoreDir::default());
        let h = HashPart::parse("wmm9hngfwxsjqpiy50lligndn8n83f6w").unwrap();
        let now = Instant::now();
        narinfos.remember(h, now + Duration::from_secs(5), Lookup::Absent);
        assert!(matches!(narinfos.remembered(&h, now), Some(Lookup::Absent)));
        assert!(narinfos
            .remembered(&h, now + Duration::from_secs(5))
            .is_none());
        narinfos.forget(&h);
        assert!(narinfos.remembered(&h, now).is_none());
        // No upstream at all: absent, remembered.
        let client = Client::new(None).unwrap();
        assert!(matches!(
            narinfos.lookup(&client, &h, &|_| {}),
            Lookup::Absent
        ));
    }
}
