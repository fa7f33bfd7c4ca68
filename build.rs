//! Build script: makes cargo rebuild when a migration changes, because `sqlx::migrate!` embeds `migrations/` at compile time.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
