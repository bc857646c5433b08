//! Tests of the pure helpers: Go durations, bind specs, quantities and the key locator.

use std::time::Duration;

use crate::adapters::backend_config::checks::{check_quantity, check_volume};
use crate::adapters::backend_config::duration::{format_go_duration, parse_go_duration};
use crate::app::config::file::locate_key;

#[test]
fn go_durations_parse_like_time_parse_duration() {
    let ms = Duration::from_millis;
    for (raw, negative, magnitude) in [
        ("0", false, ms(0)),
        ("-0", false, ms(0)),
        ("0s", false, ms(0)),
        ("300ms", false, ms(300)),
        ("30s", false, ms(30_000)),
        ("1m30s", false, ms(90_000)),
        ("1.5h", false, ms(5_400_000)),
        (".5s", false, ms(500)),
        ("-2s", true, ms(2_000)),
        ("+3m", false, ms(180_000)),
        ("1h2m3s4ms5us6ns", false, Duration::new(3723, 4_005_006)),
        ("7µs", false, Duration::from_micros(7)),
        ("7μs", false, Duration::from_micros(7)),
    ] {
        let parsed = parse_go_duration(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
        assert_eq!(
            (parsed.negative, parsed.magnitude),
            (negative, magnitude),
            "{raw}"
        );
    }
    for raw in [
        "",
        "nope",
        "30",
        "1d",
        "s",
        "1.2.3s",
        "-",
        "3 s",
        "1m30",
        "9999999999h",
    ] {
        assert!(parse_go_duration(raw).is_err(), "{raw:?} should fail");
    }
}

#[test]
fn formatted_durations_read_back_exactly() {
    for (duration, text) in [
        (Duration::ZERO, "0s"),
        (Duration::from_millis(300), "300ms"),
        (Duration::from_secs(90), "1m30s"),
        (Duration::from_secs(7200), "2h"),
        (Duration::new(1, 5), "1s5ns"),
    ] {
        assert_eq!(format_go_duration(duration), text);
        assert_eq!(parse_go_duration(text).unwrap().magnitude, duration);
    }
}

#[test]
fn bind_specs_follow_dockers_syntax() {
    for ok in [
        "/a:/b",
        "/a:/b:ro",
        "/a:/b:ro,z",
        "/a:/b:Z",
        "data:/data",
        "my_vol.1:/x:rw,nocopy",
    ] {
        assert_eq!(check_volume(ok), Ok(()), "{ok}");
    }
    for bad in [
        "/a",
        "/a:/b:ro:x",
        ":/b",
        "/a:",
        "x:/b",
        "rel/dir:/b",
        "/a:b",
        "/a:/b:rx",
        "/a:/b:ro,",
    ] {
        assert!(check_volume(bad).is_err(), "{bad} should fail");
    }
}

#[test]
fn kubernetes_quantities_are_checked() {
    for ok in ["8Gi", "500M", "1.5", "100m", "1e3", "2E-2", "+1Ki"] {
        assert_eq!(check_quantity(ok), Ok(()), "{ok}");
    }
    for bad in ["lots", "8GB", "Gi", "1..5", "", "8 Gi"] {
        assert!(check_quantity(bad).is_err(), "{bad} should fail");
    }
}

#[test]
fn keys_are_located_by_their_full_path() {
    let text = "a:\n  x: 1\nb:\n  c:\n    - name: n\n      x: 2\n  x: 3\nx: 4\n";
    assert_eq!(locate_key(text, "a.x"), Some(2));
    assert_eq!(locate_key(text, "b.c[0].x"), Some(6));
    assert_eq!(locate_key(text, "b.x"), Some(7));
    assert_eq!(locate_key(text, "x"), Some(8));
    assert_eq!(locate_key(text, "b.c[0].name"), Some(5));
    assert_eq!(locate_key(text, "a.nope"), None);
    // Compact lists, whose dashes sit at their parent's indent.
    assert_eq!(
        locate_key("env:\n- name: a\n  vaule: b\n", "env[0].vaule"),
        Some(3)
    );
}
