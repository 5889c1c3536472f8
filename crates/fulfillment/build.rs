// `sqlx::migrate!` embeds the files of migrations/ at compile time; without
// this, adding a migration (and touching no Rust file) would build a binary
// that silently lacks it.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
