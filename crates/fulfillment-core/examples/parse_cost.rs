//! Parse cost, for instruction counts: parses every shared fixture event and every
//! sample event `N` times (default 1000) with `parse_event` (what the worker runs),
//! and also with `parse_envelope` (what the receiver runs) when the second argument
//! is `both`. Uses only the public API, so the same file
//! measures any version:
//!
//! ```text
//! cargo build --release -p fulfillment-core --example parse_cost
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/parse_cost 1000 [both]   # minus the same with 0
//! ```

use std::fs;
use std::hint::black_box;
use std::path::Path;

use fulfillment_core::sample::{self, SAMPLE_TYPES, SampleSpec};
use fulfillment_core::{parse_envelope, parse_event};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/stripe/events"
);

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("rounds: a number"))
        .unwrap_or(1000);
    let both = std::env::args().nth(2).as_deref() == Some("both");
    let bodies = corpus();
    let mut handled = 0usize;
    for _ in 0..rounds {
        for body in &bodies {
            let accepted = !both || parse_envelope(black_box(body)).is_ok();
            let parsed = parse_event(black_box(body));
            handled += usize::from(accepted && parsed.is_ok());
        }
    }
    println!(
        "{} bodies x {rounds} rounds, {handled} accepted and parsed",
        bodies.len()
    );
}

fn corpus() -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    let dir = Path::new(FIXTURES);
    if dir.is_dir() {
        let mut paths: Vec<_> = fs::read_dir(dir)
            .expect("readable fixture directory")
            .map(|entry| entry.expect("directory entry").path())
            .filter(|path| {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.ends_with(".json") && !name.contains("DATA_ONLY") && !name.contains("_EXCERPT")
            })
            .collect();
        paths.sort();
        bodies.extend(
            paths
                .iter()
                .map(|path| fs::read(path).expect("readable fixture")),
        );
    }
    for event_type in SAMPLE_TYPES {
        let spec = SampleSpec {
            event_id: "evt_sample",
            order_id: "ord_sample",
            payment_intent_id: Some("pi_sample"),
            payment_status: "paid",
            order_in_metadata: true,
            created: 1_700_000_000,
        };
        bodies.push(sample::event(event_type, &spec).expect("a sample type"));
    }
    bodies
}
