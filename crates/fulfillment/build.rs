//! `sqlx::migrate!` embeds `migrations/` at compile time, but on stable Rust
//! a new file there does not by itself make cargo rebuild the crate: a
//! binary built before it would run without the migration. Watching the
//! directory closes that gap (what sqlx's documentation recommends).
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
