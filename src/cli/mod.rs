//! Command-line glue: one file per subcommand, each turning parsed arguments into a call to the library.

pub mod mock_zego;
