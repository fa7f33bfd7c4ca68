//! The integration tests, one binary: a module per area, each against the real broker, database and HTTP
//! listeners (`KICKQ_TEST_AMQP_URL`, `KICKQ_TEST_DATABASE_URL`), with `kickq mock-zego` standing in for the API.
//! Run one area with a filter on its module: `cargo test --test it dlq::`.

mod common;

mod apps;
#[cfg(feature = "bench")]
mod bench_smoke;
mod check;
mod cli;
mod cluster;
mod console;
mod console_browser;
mod crash;
mod deadline;
mod demo;
mod deploy_files;
mod dlq;
mod enqueue;
mod events;
mod faults;
mod fuzz_corpus;
mod http_intake;
mod lanes;
mod layout;
mod ledger;
mod ledger_store;
mod mock_apps;
mod operator;
mod producer;
mod shards;
mod worker;
mod zego_client;
