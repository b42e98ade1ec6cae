use super::*;

/// A registry with one of everything, and the exact text it renders.
fn sample_registry() -> Metrics {
    let m = Metrics::default();
    m.activation();
    m.connection_accepted();
    m.connection_accepted();
    m.connection_refused();
    m.store_connection_opened();
    m.reply("narinfo", 200, 100, None);
    m.reply("narinfo", 200, 50, None);
    m.reply("narinfo", 404, 10, None);
    m.reply("nar", 200, 1000, Some(Duration::from_millis(250)));
    m.store_lookup(Duration::from_micros(250));
    m.store_lookup(Duration::from_millis(3));
    m.idle_exit();
    m
}

const SAMPLE: &str = "\
# nix-serve-sd metrics 1: counters start from this file's values at each start; delete it to reset them
# HELP nix_serve_requests_total Requests answered, by route and status.
# TYPE nix_serve_requests_total counter
nix_serve_requests_total{route=\"nar\",status=\"200\"} 1
nix_serve_requests_total{route=\"narinfo\",status=\"200\"} 2
nix_serve_requests_total{route=\"narinfo\",status=\"404\"} 1
# HELP nix_serve_sent_bytes_total Bytes written to clients, response heads included, by route.
# TYPE nix_serve_sent_bytes_total counter
nix_serve_sent_bytes_total{route=\"nar\"} 1000
nix_serve_sent_bytes_total{route=\"narinfo\"} 160
# HELP nix_serve_store_lookup_seconds Time a store worker took to answer a request from the store.
# TYPE nix_serve_store_lookup_seconds histogram
nix_serve_store_lookup_seconds_bucket{le=\"0.0005\"} 1
nix_serve_store_lookup_seconds_bucket{le=\"0.001\"} 1
nix_serve_store_lookup_seconds_bucket{le=\"0.0025\"} 1
nix_serve_store_lookup_seconds_bucket{le=\"0.005\"} 2
nix_serve_store_lookup_seconds_bucket{le=\"0.01\"} 2
nix_serve_store_lookup_seconds_bucket{le=\"0.025\"} 2
nix_serve_store_lookup_seconds_bucket{le=\"0.05\"} 2
nix_serve_store_lookup_seconds_bucket{le=\"0.1\"} 2
nix_serve_store_lookup_seconds_bucket{le=\"0.25\"} 2
nix_serve_store_lookup_seconds_bucket{le=\"0.5\"} 2
nix_serve_store_lookup_seconds_bucket{le=\"1\"} 2
nix_serve_store_lookup_seconds_bucket{le=\"2.5\"} 2
nix_serve_store_lookup_seconds_bucket{le=\"5\"} 2
nix_serve_store_lookup_seconds_bucket{le=\"10\"} 2
nix_serve_store_lookup_seconds_bucket{le=\"+Inf\"} 2
nix_serve_store_lookup_seconds_sum 0.0032500000000000003
nix_serve_store_lookup_seconds_count 2
# HELP nix_serve_nar_stream_seconds Time from the first to the last byte of a NAR reply.
# TYPE nix_serve_nar_stream_seconds histogram
nix_serve_nar_stream_seconds_bucket{le=\"0.01\"} 0
nix_serve_nar_stream_seconds_bucket{le=\"0.05\"} 0
nix_serve_nar_stream_seconds_bucket{le=\"0.1\"} 0
nix_serve_nar_stream_seconds_bucket{le=\"0.5\"} 1
nix_serve_nar_stream_seconds_bucket{le=\"1\"} 1
nix_serve_nar_stream_seconds_bucket{le=\"5\"} 1
nix_serve_nar_stream_seconds_bucket{le=\"10\"} 1
nix_serve_nar_stream_seconds_bucket{le=\"30\"} 1
nix_serve_nar_stream_seconds_bucket{le=\"60\"} 1
nix_serve_nar_stream_seconds_bucket{le=\"300\"} 1
nix_serve_nar_stream_seconds_bucket{le=\"1800\"} 1
nix_serve_nar_stream_seconds_bucket{le=\"+Inf\"} 1
nix_serve_nar_stream_seconds_sum 0.25
nix_serve_nar_stream_seconds_count 1
# HELP nix_serve_connections_accepted_total Client connections accepted.
# TYPE nix_serve_connections_accepted_total counter
nix_serve_connections_accepted_total 2
# HELP nix_serve_connections_refused_total Client connections refused (503) at the connection limit.
# TYPE nix_serve_connections_refused_total counter
nix_serve_connections_refused_total 1
# HELP nix_serve_activations_total Process starts.
# TYPE nix_serve_activations_total counter
nix_serve_activations_total 1
# HELP nix_serve_idle_exits_total Exits after --idle-timeout without a connection.
# TYPE nix_serve_idle_exits_total counter
nix_serve_idle_exits_total 1
# HELP nix_serve_store_connections_opened_total Store connections opened: one per worker, then one per reconnect.
# TYPE nix_serve_store_connections_opened_total counter
nix_serve_store_connections_opened_total 1
# end of nix-serve-sd metrics
";

#[test]
fn renders_the_exposition_format_byte_for_byte() {
    assert_eq!(sample_registry().render(), SAMPLE);
}

#[test]
fn an_empty_registry_has_every_family_and_no_labelled_sample() {
    let text = Metrics::default().render();
    assert!(
        text.contains("# TYPE nix_serve_requests_total counter\n# HELP nix_serve_sent_bytes_total")
    );
    assert!(text.contains("nix_serve_store_lookup_seconds_bucket{le=\"+Inf\"} 0\n"));
    assert!(text.contains("nix_serve_store_lookup_seconds_sum 0\n"));
    assert!(text
        .ends_with("nix_serve_store_connections_opened_total 0\n# end of nix-serve-sd metrics\n"));
}

#[test]
fn a_rendered_file_reads_back_to_the_same_values() {
    let values = parse(SAMPLE).unwrap();
    assert_eq!(render(&values, false), SAMPLE);
    // And goes on counting from there.
    let m = Metrics::from_values(values);
    m.activation();
    m.reply("narinfo", 404, 5, None);
    let text = m.render();
    assert!(text.contains("nix_serve_activations_total 2\n"), "{text}");
    assert!(
        text.contains("{route=\"narinfo\",status=\"404\"} 2\n"),
        "{text}"
    );
    assert!(text.contains("nix_serve_sent_bytes_total{route=\"narinfo\"} 165\n"));
    // This process alone, for the exit line.
    let run = m.run_summary();
    assert_eq!((run.requests, run.bytes), (1, 5));
}

#[test]
fn a_route_this_version_does_not_know_is_carried() {
    let text =
        format!("{MARKER}\nnix_serve_requests_total{{route=\"future\",status=\"200\"}} 7\n{END}");
    let out = render(&parse(&text).unwrap(), false);
    assert!(out.contains("nix_serve_requests_total{route=\"future\",status=\"200\"} 7\n"));
}

#[test]
fn observations_fall_in_the_first_bucket_that_holds_them() {
    let mut h = Histogram::new(&[0.1, 1.0]);
    for s in [0.0, 0.1, 0.5, 1.0, 2.0] {
        h.observe(s);
    }
    assert_eq!(h.counts, vec![2, 2, 1]);
    assert_eq!(h.count(), 5);
}

#[test]
fn what_is_not_ours_is_refused() {
    let foreign = [
        "",
        "node_load1 0.5\n",
        "# HELP x y\n# TYPE x counter\nx 1\n",
        "\u{0}\u{0}\u{0}",
    ];
    for text in foreign {
        assert!(matches!(parse(text), Err(LoadError::Foreign)), "{text:?}");
    }
    let m = MARKER;
    let corrupt = [
        (format!("{m}\nnix_serve_activations_total\n{END}"), 2),
        (format!("{m}\nnix_serve_activations_total x\n{END}"), 2),
        (format!("{m}\nnix_serve_activations_total -1\n{END}"), 2),
        (format!("{m}\nnix_serve_activations_total 1 2\n{END}"), 2),
        (format!("{m}\n\nnix_serve_other_total 1\n{END}"), 3),
        (
            format!("{m}\nnix_serve_requests_total{{route=\"a\"}} 1\n{END}"),
            2,
        ),
        (
            format!("{m}\nnix_serve_requests_total{{route=\"a\",status=\"x\"}} 1\n{END}"),
            2,
        ),
        (
            format!("{m}\nnix_serve_sent_bytes_total{{route=\"a\" 1\n{END}"),
            2,
        ),
        (
            format!("{m}\nnix_serve_sent_bytes_total{{route=a}} 1\n{END}"),
            2,
        ),
        (
            format!("{m}\nnix_serve_nar_stream_seconds_bucket{{le=\"0.02\"}} 1\n{END}"),
            2,
        ),
        (
            format!("{m}\nnix_serve_nar_stream_seconds_total 1\n{END}"),
            2,
        ),
    ];
    for (text, line) in corrupt {
        match parse(&text) {
            Err(LoadError::Corrupt { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
            other => panic!("{text:?}: {other:?}"),
        }
    }
    // A histogram cut short, or whose buckets do not add up.
    let cut = SAMPLE.replace("nix_serve_nar_stream_seconds_count 1\n", "");
    assert!(matches!(parse(&cut), Err(LoadError::Corrupt { .. })));
    let shrinking = SAMPLE.replace(
        "nix_serve_nar_stream_seconds_bucket{le=\"1\"} 1",
        "nix_serve_nar_stream_seconds_bucket{le=\"1\"} 0",
    );
    assert!(matches!(parse(&shrinking), Err(LoadError::Corrupt { .. })));
    let truncated = &SAMPLE[..SAMPLE.len() / 2];
    assert!(parse(truncated).is_err());
}

#[test]
fn resume_and_save_round_trip_through_a_file() {
    let dir = std::env::temp_dir().join(format!("nss-metrics-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("metrics.prom");
    let _ = std::fs::remove_file(&path);

    let (m, err) = Metrics::resume(&path);
    assert!(err.is_none(), "a missing file is a fresh start");
    m.activation();
    m.save(&path).unwrap();
    let (m, err) = Metrics::resume(&path);
    assert!(err.is_none());
    m.activation();
    m.save(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("nix_serve_activations_total 2\n"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
    // Only the file is left: no temporary beside it.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("metrics.prom")]);

    std::fs::write(&path, b"\xff\xfe not text").unwrap();
    let (m, err) = Metrics::resume(&path);
    assert!(matches!(err, Some(LoadError::Corrupt { .. })), "{err:?}");
    assert!(m.render().contains("nix_serve_activations_total 0\n"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn upstream_families_only_with_upstreams_or_counts_and_read_back() {
    let m = Metrics::default();
    assert!(!m.render().contains("upstream"), "without --upstream");
    m.upstream_on();
    let empty = m.render();
    assert!(empty.contains("# TYPE nix_serve_upstream_requests_total counter\n"));
    assert!(empty.contains("\nnix_serve_upstream_fetched_bytes_total 0\n"));
    m.upstream_request("narinfo", "found");
    m.upstream_request("narinfo", "found");
    m.upstream_request("nar", "ok");
    m.upstream_fetched(1000);
    m.upstream_fetched(24);
    m.upstream_import("added");
    let text = m.render();
    for line in [
        "nix_serve_upstream_requests_total{kind=\"nar\",result=\"ok\"} 1\n",
        "nix_serve_upstream_requests_total{kind=\"narinfo\",result=\"found\"} 2\n",
        "nix_serve_upstream_fetched_bytes_total 1024\n",
        "nix_serve_upstream_imports_total{result=\"added\"} 1\n",
    ] {
        assert!(text.contains(line), "{line}{text}");
    }
    // Carried over by the file, and shown by a process without upstreams.
    let values = parse(&text).unwrap();
    assert_eq!(render(&values, false), text);
    let u = Metrics::from_values(values).upstream();
    assert_eq!(
        (
            u.request("narinfo", "found"),
            u.fetched_bytes,
            u.import("added")
        ),
        (2, 1024, 1)
    );
    assert_eq!(u.import("refused"), 0);
    let bad = format!("{MARKER}\nnix_serve_upstream_imports_total{{kind=\"x\"}} 1\n{END}");
    assert!(matches!(
        parse(&bad),
        Err(LoadError::Corrupt { line: 2, .. })
    ));
}
